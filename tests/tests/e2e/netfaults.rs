//! Faults the network has, in network namespaces (see
//! `sshbridge_tests::netlab`): a node blackholed (packets dropped both
//! ways, no reset) and a node whose side forgets the connection
//! (half-open). Continuous traffic runs to every node throughout.

use std::time::Duration;

use sshbridge::report::{PathState, Report};
use sshbridge_tests::netlab::traffic::Traffic;
use sshbridge_tests::netlab::Lab;
use sshbridge_tests::{ssh_state, Bridge, BridgeConfig, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::support::{echo_round_trip, within};

/// What a loaded 2-core machine may add to a deadline.
pub const SLACK: Duration = Duration::from_secs(3);
/// Pause between two attempts of one traffic loop.
pub const TRAFFIC_PAUSE: Duration = Duration::from_millis(100);

/// A lab cluster of `n` nodes and a bridge for all of them (config changed
/// by `tweak` first), every node's ssh path up.
pub async fn lab_bridge(
    n: usize,
    tweak: impl FnOnce(&mut BridgeConfig),
) -> anyhow::Result<(Lab, Cluster, Bridge)> {
    let mut lab = Lab::new()?;
    let cluster = Cluster::in_netns(&mut lab, n).await?;
    let mut config = cluster.bridge_config()?;
    tweak(&mut config);
    let bridge = Bridge::start(config, Some(&cluster.nodes[0].kubelet_target())).await?;
    bridge
        .wait_for_report("every node up", Duration::from_secs(30), all_up)
        .await?;
    Ok((lab, cluster, bridge))
}

/// Every node's ssh path is up.
pub fn all_up(r: &Report) -> bool {
    !r.nodes.is_empty() && r.nodes.iter().all(|n| n.paths.ssh.state == PathState::Up)
}

/// Traffic to every node's echo pod.
pub fn traffic_to_all(cluster: &Cluster, bridge: &Bridge) -> Traffic {
    let targets = cluster
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.echo.addr().to_string()))
        .collect();
    Traffic::start(bridge.egress(), targets, TRAFFIC_PAUSE)
}

/// A duration of the kit's config (`"1s"`, `"500ms"`).
pub fn secs(text: &str) -> Duration {
    humanish(text).unwrap_or_else(|| panic!("the kit's duration {text:?} is not ms or s"))
}

fn humanish(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    text.strip_suffix('s')?
        .parse()
        .ok()
        .map(Duration::from_secs)
}

/// Asserts no other node than `except` saw a failed request since `from`.
pub fn assert_others_clean(traffic: &Traffic, except: &str, from: Instant) {
    let failed = traffic.failures_elsewhere(except, from);
    assert!(
        failed.is_empty(),
        "nodes other than {except} must see no failed request; saw {}: {:?}",
        failed.len(),
        failed.iter().take(5).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn netns_blackhole_marks_the_node_down_in_time_and_it_comes_back() -> anyhow::Result<()> {
    within(90, async {
        let (lab, cluster, mut bridge) = lab_bridge(3, |c| {
            c.connect_timeout = "2s".into();
        })
        .await?;
        let c = &bridge.config;
        // DESIGN: a silent node is down within keepalive_interval x
        // keepalive_max, plus one probe interval.
        let bound = secs(&c.keepalive_interval) * c.keepalive_max + secs(&c.health_interval);
        let one_step = secs(&c.connect_timeout) + secs(&c.backoff.1) + secs(&c.health_interval);
        let traffic = traffic_to_all(&cluster, &bridge);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let victim = &cluster.nodes[1];
        let ns = lab
            .by_node_ip(victim.address)
            .expect("node-1 is in the lab");
        let start = Instant::now();
        ns.blackhole()?;
        bridge
            .wait_for_report("node-1 down", bound + SLACK, |r| {
                ssh_state(r, "node-1") == Some(PathState::Down)
            })
            .await?;
        let detected = start.elapsed();
        eprintln!("netfaults: blackhole detected after {detected:?} (bound {bound:?})");
        // Dials to the dead node fail fast and say which node it is.
        let c = bridge.egress().connect(&victim.kubelet_target()).await?;
        assert_eq!(c.status, 503, "{c:?}");
        assert!(c.body.contains("node-1"), "the 503 must name node-1: {c:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let healed = Instant::now();
        ns.heal()?;
        bridge
            .wait_for_status(&victim.echo.addr().to_string(), 200, one_step + SLACK)
            .await?;
        let back = healed.elapsed();
        eprintln!("netfaults: tunnel back {back:?} after the drop ended (bound {one_step:?})");
        bridge
            .wait_for_report("node-1 up again", one_step + SLACK, all_up)
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        traffic.stop();
        assert_others_clean(&traffic, "node-1", start);
        let after = traffic.to_node_since("node-1", healed + back + Duration::from_millis(500));
        assert!(
            after.iter().all(|a| a.result.is_ok()),
            "node-1's traffic after its return must succeed: {after:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn netns_half_open_session_is_never_used_for_a_dial() -> anyhow::Result<()> {
    within(90, async {
        // Keepalives far slower than the fault: the bridge cannot have
        // noticed anything by keepalive when the first dial arrives.
        let (lab, mut cluster, bridge) = lab_bridge(2, |c| {
            c.keepalive_interval = "20s".into();
            c.health_interval = "20s".into();
        })
        .await?;
        let traffic = Traffic::start(
            bridge.egress(),
            vec![("node-0".into(), cluster.nodes[0].echo.addr().to_string())],
            TRAFFIC_PAUSE,
        );
        let echo = cluster.nodes[1].echo.addr().to_string();
        // A stream opened on the session that is about to die.
        let mut old = bridge.egress().connect(&echo).await?;
        assert_eq!(old.status, 200, "{old:?}");
        echo_round_trip(&mut old.stream, b"before").await?;
        let ns = lab
            .by_node_ip(cluster.nodes[1].address)
            .expect("node-1 is in the lab")
            .clone();
        let start = Instant::now();
        // The node forgets: sshd dies while its FIN/RST cannot get out.
        ns.blackhole()?;
        cluster.nodes[1].sshd.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        ns.heal()?;
        cluster.nodes[1].sshd.restart().await?;
        // Every dial now either works end to end (a new session) or fails
        // cleanly naming the node; none hangs, none is a 200 on the dead
        // session (whose echo would never come back).
        let mut clean_errors = Vec::new();
        let mut served = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while served < 3 {
            anyhow::ensure!(Instant::now() < deadline, "no dial to node-1 worked in 30s");
            let t = Instant::now();
            let c = tokio::time::timeout(Duration::from_secs(8), bridge.egress().connect(&echo))
                .await
                .map_err(|_| anyhow::anyhow!("a dial to node-1 hung after its sshd restarted"))??;
            if c.status == 200 {
                let mut s = c.stream;
                echo_round_trip(&mut s, b"after the restart")
                    .await
                    .map_err(|e| e.context("a 200 was served on the dead session"))?;
                served += 1;
            } else {
                assert!(c.body.contains("node-1"), "the error must name node-1: {c:?}");
                clean_errors.push((c.status, t.elapsed()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        eprintln!(
            "netfaults: half-open: new session served after {:?}; clean errors before: {clean_errors:?}",
            start.elapsed()
        );
        // The stream on the dead session ends (error or EOF) instead of
        // hanging: the bridge tore the session down.
        let _ = old.stream.write_all(b"still there?").await;
        let mut buf = [0u8; 64];
        let ended = tokio::time::timeout(Duration::from_secs(5), old.stream.read(&mut buf)).await;
        assert!(
            matches!(ended, Ok(Ok(0)) | Ok(Err(_))),
            "the stream on the forgotten session must end, not hang or answer: {ended:?}"
        );
        traffic.stop();
        assert_others_clean(&traffic, "node-1", start);
        Ok(())
    })
    .await
}
