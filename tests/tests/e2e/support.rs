//! Small helpers shared by the e2e tests.

use std::future::Future;
use std::time::Duration;

use sshbridge::report::PathState;
use sshbridge_config::Route;
use sshbridge_tests::{kubelet_get, Agent, Bridge, Cluster, KonnectivityConfig, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs a whole test body under a deadline, so a hang fails instead of
/// blocking the suite.
pub async fn within<F: Future<Output = anyhow::Result<()>>>(
    secs: u64,
    body: F,
) -> anyhow::Result<()> {
    let (result, logs) = sshbridge_tests::bridge::capture_logs(async {
        tokio::time::timeout(Duration::from_secs(secs), body)
            .await
            .map_err(|_| anyhow::anyhow!("test did not finish within {secs}s"))?
    })
    .await;
    if result.is_err() {
        for log in logs {
            eprintln!("---- sshbridge log (last 200 lines) ----\n{log}");
        }
    }
    result
}

/// A cluster of `n` nodes and a bridge for all of them, ready (node-0's
/// kubelet reachable through it).
pub async fn cluster_and_bridge(n: usize) -> anyhow::Result<(Cluster, Bridge)> {
    let cluster = Cluster::builder().nodes(n).build().await?;
    let config = cluster.bridge_config()?;
    let bridge = Bridge::start(config, Some(&cluster.nodes[0].kubelet_target())).await?;
    Ok((cluster, bridge))
}

/// Writes `msg` on an open tunnel and expects it echoed back.
pub async fn echo_round_trip(stream: &mut Stream, msg: &[u8]) -> anyhow::Result<()> {
    let io = async {
        stream.write_all(msg).await?;
        let mut back = vec![0u8; msg.len()];
        stream.read_exact(&mut back).await?;
        anyhow::ensure!(back == msg, "echo came back different");
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| anyhow::anyhow!("echo round trip timed out"))?
}

/// Reads until EOF, bounded.
pub async fn read_to_end(stream: &mut Stream, secs: u64) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(secs), stream.read_to_end(&mut out))
        .await
        .map_err(|_| anyhow::anyhow!("no EOF within {secs}s"))??;
    Ok(out)
}

/// A cluster whose bridge also runs the Konnectivity server and the gRPC
/// egress, with one agent per node listed in `agents`.
pub struct KonnectivitySetup {
    /// The nodes.
    pub cluster: Cluster,
    /// The daemon.
    pub bridge: Bridge,
    /// Agents by node index (`None` for a node started without one).
    pub agents: Vec<Option<Agent>>,
}

/// `n` nodes; the nodes whose index is in `konnectivity` route over
/// Konnectivity, the others over SSH; the nodes in `agents` get an agent.
/// Returns once every node's SSH path and every agent's node's
/// Konnectivity path are up.
pub async fn konnectivity_setup(
    n: usize,
    konnectivity: &[usize],
    agents: &[usize],
    tune: impl FnOnce(&mut KonnectivityConfig),
) -> anyhow::Result<KonnectivitySetup> {
    let cluster = Cluster::builder().nodes(n).build().await?;
    let config = cluster.bridge_config()?;
    let mut k = cluster.konnectivity_config(&config)?;
    for &i in konnectivity {
        k.route(&cluster.nodes[i].name, Route::Konnectivity);
    }
    tune(&mut k);
    let mut started = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        started.push(if agents.contains(&i) {
            Some(cluster.start_agent(&k, node).await?)
        } else {
            None
        });
    }
    let bridge = Bridge::start_with(config, Some(k), None).await?;
    bridge
        .wait_for_report("every ssh path up", Duration::from_secs(30), |r| {
            r.nodes.iter().all(|n| n.paths.ssh.state == PathState::Up)
        })
        .await?;
    for &i in agents {
        bridge
            .wait_for_konnectivity(&cluster.nodes[i].name, Duration::from_secs(30))
            .await?;
    }
    Ok(KonnectivitySetup {
        cluster,
        bridge,
        agents: started,
    })
}

/// One kubelet GET to `node` through CONNECT; the body must name the node.
pub async fn kubelet_via_connect(
    bridge: &Bridge,
    cluster: &Cluster,
    node: usize,
) -> anyhow::Result<()> {
    let n = &cluster.nodes[node];
    let c = bridge.egress().connect(&n.kubelet_target()).await?;
    anyhow::ensure!(c.status == 200, "CONNECT {} -> {c:?}", n.kubelet_target());
    let (status, body) =
        kubelet_get(c.stream, cluster.kubelet_client_tls()?, n.address, "/pods").await?;
    anyhow::ensure!(
        status == 200 && body == format!("node={} path=/pods\n", n.name),
        "kubelet of {} answered {status} {body:?}",
        n.name
    );
    Ok(())
}

/// A follower's watch of the shared migration record works: once it has
/// listed, `follower.changed()` stays quiet while nothing is written (a
/// store whose watch failed wakes every 500 ms instead), and wakes within
/// 2 s of a write by `writer`. Returns how long the wake took.
pub async fn record_watch_works(
    follower: &mut sshbridge_kubeapi::record::KubeStore,
    writer: &mut sshbridge_kubeapi::record::KubeStore,
) -> anyhow::Result<Duration> {
    use sshbridge_migrate::Store;
    let quiet = Duration::from_secs(2);
    let start = std::time::Instant::now();
    loop {
        if tokio::time::timeout(quiet, follower.changed())
            .await
            .is_err()
        {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(15),
            "the record's watch never went quiet: the follower polls (no list/watch \
             permission, or the watch fails)"
        );
    }
    // A change (an update that changes nothing is no event): one more node.
    let mut state = writer.load().await?.unwrap_or_default();
    let node = format!("watch-probe-{}", start.elapsed().as_nanos());
    state.transition(&node, sshbridge_migrate::NodePhase::Shadow, "watch probe")?;
    writer.save(&state).await?;
    let wrote = std::time::Instant::now();
    tokio::time::timeout(quiet, follower.changed())
        .await
        .map_err(|_| anyhow::anyhow!("no wake within {quiet:?} of a write to the record"))?;
    Ok(wrote.elapsed())
}

/// The bytes the bridge received on each of its established TCP
/// connections to `sshd` (`ss`), one entry per SSH session, by the
/// bridge's local address.
pub fn ssh_sessions(
    sshd: std::net::SocketAddr,
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let out = std::process::Command::new("ss")
        .args(["-tinH", "state", "established"])
        .arg(format!(
            "( dst {} and dport = :{} )",
            sshd.ip(),
            sshd.port()
        ))
        .output()?;
    anyhow::ensure!(out.status.success(), "ss: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // Each socket is a line `Recv-Q Send-Q Local Peer`, then an indented
    // line of counters.
    let mut sessions = std::collections::BTreeMap::new();
    let mut local = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            local = line.split_whitespace().nth(2).map(str::to_owned);
        } else if let Some(l) = local.take() {
            let received = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("bytes_received:"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            sessions.insert(l, received);
        }
    }
    Ok(sessions)
}
