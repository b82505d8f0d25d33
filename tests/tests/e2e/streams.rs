//! Data integrity, half-close, and isolation of streams whose clients
//! stop reading.

use std::time::Duration;

use rand::RngCore;
use sshbridge_tests::{
    kubelet_get, sha256_hex, Bridge, Cluster, Egress, FirehoseCheck, PodServer, Stream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{cluster_and_bridge, echo_round_trip, read_to_end, ssh_sessions, within};

const MIB: usize = 1024 * 1024;

/// Sends `data` to a pod server and checks what comes back: the echo for
/// an echo server, the hash for a hash server.
pub(crate) async fn one_stream(
    egress: Egress,
    target: String,
    data: Vec<u8>,
    echo: bool,
) -> anyhow::Result<()> {
    let c = egress.connect(&target).await?;
    anyhow::ensure!(c.status == 200, "CONNECT {target}: {c:?}");
    let (mut r, mut w) = tokio::io::split(c.stream);
    let writer = async {
        w.write_all(&data).await?;
        w.shutdown().await?;
        Ok::<_, std::io::Error>(())
    };
    let reader = async {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await?;
        Ok::<_, std::io::Error>(back)
    };
    let (wrote, back) = tokio::join!(writer, reader);
    wrote?;
    let back = back?;
    if echo {
        anyhow::ensure!(
            back.len() == data.len(),
            "echo returned {} of {} bytes",
            back.len(),
            data.len()
        );
        anyhow::ensure!(
            sha256_hex(&back) == sha256_hex(&data),
            "echoed bytes differ"
        );
    } else {
        anyhow::ensure!(
            back == sha256_hex(&data).as_bytes(),
            "the pod received different bytes"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_2mib_streams_arrive_intact() -> anyhow::Result<()> {
    within(300, async {
        let (cluster, bridge) = cluster_and_bridge(2).await?;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let node = &cluster.nodes[i % 2];
            let echo = i % 4 < 2;
            let target = if echo {
                node.echo.addr()
            } else {
                node.hash.addr()
            }
            .to_string();
            let mut data = vec![0u8; 2 * MIB + i];
            rand::thread_rng().fill_bytes(&mut data);
            tasks.spawn(one_stream(bridge.egress(), target, data, echo));
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn half_close_works_in_both_directions() -> anyhow::Result<()> {
    within(60, async {
        let (cluster, bridge) = cluster_and_bridge(1).await?;
        let node = &cluster.nodes[0];
        // Client closes first: the pod sees EOF and can still answer.
        one_stream(
            bridge.egress(),
            node.hash.addr().to_string(),
            b"client half-close".to_vec(),
            false,
        )
        .await?;
        // Pod closes first: the client sees EOF and can still send.
        let mut c = bridge
            .egress()
            .connect_server_speaks_first(&node.close_first.addr().to_string())
            .await?;
        assert_eq!(c.status, 200);
        assert_eq!(read_to_end(&mut c.stream, 10).await?, b"bye\n");
        let late = b"written after the pod closed its side";
        c.stream.write_all(late).await?;
        c.stream.shutdown().await?;
        let want = sha256_hex(late);
        let recorded = async {
            while !node.close_first.received().contains(&want) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), recorded)
            .await
            .map_err(|_| anyhow::anyhow!("the pod never received the bytes sent after its EOF"))?;
        Ok(())
    })
    .await
}

/// Reads `len` more bytes of a firehose stream, checking the pattern.
async fn read_firehose(
    stream: &mut Stream,
    check: &mut FirehoseCheck,
    len: u64,
    secs: u64,
) -> anyhow::Result<()> {
    let goal = check.verified() + len;
    let mut buf = vec![0u8; 256 * 1024];
    let read = async {
        while check.verified() < goal {
            let want = (goal - check.verified()).min(buf.len() as u64) as usize;
            let n = stream.read(&mut buf[..want]).await?;
            anyhow::ensure!(
                n > 0,
                "the firehose stream ended at byte {}",
                check.verified()
            );
            check.feed(&buf[..n])?;
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(secs), read)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "only {} of {goal} firehose bytes arrived within {secs}s",
                check.verified()
            )
        })?
}

/// Waits until the firehose has stopped writing (two samples 500ms apart
/// agree) and returns how much it wrote; fails if it never stops.
async fn firehose_settles(firehose: &PodServer, secs: u64) -> anyhow::Result<u64> {
    let settle = async {
        let mut last = firehose.sent();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = firehose.sent();
            if now == last {
                return now;
            }
            last = now;
        }
    };
    tokio::time::timeout(Duration::from_secs(secs), settle)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the firehose never had to wait ({} bytes written): stalled streams are \
                 buffered without bound",
                firehose.sent()
            )
        })
}

/// Bytes the bridge received from `node` over its SSH path (`/report`).
async fn received_from(bridge: &Bridge, node: &str) -> anyhow::Result<u64> {
    let report = bridge.report().await?;
    report
        .nodes
        .iter()
        .find(|n| n.name == node)
        .map(|n| n.paths.ssh.bytes_received)
        .ok_or_else(|| anyhow::anyhow!("{node} is not in /report"))
}

/// [`received_from`] once two samples 500ms apart agree.
async fn settled_received(bridge: &Bridge, node: &str) -> anyhow::Result<u64> {
    let settle = async {
        let mut last = received_from(bridge, node).await?;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = received_from(bridge, node).await?;
            // Health probes add a few KiB now and then.
            if now - last < PROBE_SLACK / 4 {
                return Ok::<_, anyhow::Error>(now);
            }
            last = now;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), settle)
        .await
        .map_err(|_| anyhow::anyhow!("the bridge never stopped taking bytes from {node}"))?
}

/// What a few health probes (TLS handshakes with the kubelet) add to a
/// node's byte counter while a test waits.
const PROBE_SLACK: u64 = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_hold_back_only_their_own_streams() -> anyhow::Result<()> {
    within(180, stalled_readers(1)).await
}

/// With `ssh.sessions_per_node = 2` the bridge keeps two sessions to the
/// node, new streams go to the one with fewer open streams, and a stalled
/// reader still holds back only its own stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_per_node_share_the_streams_and_keep_readers_isolated() -> anyhow::Result<()> {
    within(180, stalled_readers(2)).await
}

async fn stalled_readers(sessions: usize) -> anyhow::Result<()> {
    const STALLED: usize = 4;
    let cluster = Cluster::builder().nodes(1).build().await?;
    let node = &cluster.nodes[0];
    let mut config = cluster.bridge_config()?;
    config.max_stream_buffer = "1MiB".into();
    config.keepalive_interval = "1s".into();
    config.keepalive_max = 2;
    config
        .extra_ssh_lines
        .push(format!("sessions_per_node = {sessions}"));
    let bridge = Bridge::start(config, Some(&node.kubelet_target())).await?;
    // Every session up before the streams are dialed.
    let sshd = node.sshd.addr();
    let all_up = async {
        while ssh_sessions(sshd)?.len() != sessions {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(20), all_up)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the bridge did not hold {sessions} sessions to {sshd}: {:?}",
                ssh_sessions(sshd)
            )
        })??;
    let per_session_before = ssh_sessions(sshd)?;
    let received_before = received_from(&bridge, &node.name).await?;
    // Streams fed by endless writers whose clients never read.
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let c = bridge
            .egress()
            .connect_server_speaks_first(&node.firehose.addr().to_string())
            .await?;
        anyhow::ensure!(c.status == 200, "CONNECT to the firehose: {c:?}");
        stalled.push(c.stream);
    }
    // The writers are held back by the window: once the firehose has
    // stopped, the bridge has taken at most one max_stream_buffer per
    // unread stream from the node (plus a few health probes).
    firehose_settles(&node.firehose, 30).await?;
    let taken = settled_received(&bridge, &node.name).await? - received_before;
    let window = MIB as u64;
    assert!(
        taken >= STALLED as u64 * window * 3 / 4,
        "the unread streams took only {taken} bytes: they were never filled"
    );
    assert!(
        taken <= STALLED as u64 * window + PROBE_SLACK,
        "the bridge took {taken} bytes from the node for {STALLED} unread streams \
         with ssh.max_stream_buffer = {window}"
    );
    // The unread streams were spread over the sessions.
    let per_session = ssh_sessions(sshd)?;
    anyhow::ensure!(
        per_session.keys().eq(per_session_before.keys()),
        "the sessions to {sshd} changed: {per_session_before:?} -> {per_session:?}"
    );
    // Each session holds the window of one unread stream at least (a
    // health probe dialed meanwhile may tip a tie the other way).
    for (local, after) in &per_session {
        let carried = after - per_session_before[local];
        assert!(
            carried >= window * 3 / 4,
            "the session from {local} carried {carried} bytes, less than one unread \
             stream's window: the streams were not spread \
             ({per_session_before:?} -> {per_session:?})"
        );
    }
    // Meanwhile another stream of the same node moves 8 MiB of echo
    // both ways, intact and without waiting for the stalled ones.
    let mut data = vec![0u8; 8 * MIB];
    rand::thread_rng().fill_bytes(&mut data);
    let echo = one_stream(bridge.egress(), node.echo.addr().to_string(), data, true);
    tokio::time::timeout(Duration::from_secs(60), echo)
        .await
        .map_err(|_| anyhow::anyhow!("stalled readers stalled the node's echo stream"))??;
    // The node's kubelet keeps answering through the same tunnel.
    let c = bridge.egress().connect(&node.kubelet_target()).await?;
    anyhow::ensure!(c.status == 200, "CONNECT to the kubelet: {c:?}");
    let tls = cluster.kubelet_client_tls()?;
    let (status, body) = kubelet_get(c.stream, tls, node.address, "/healthz").await?;
    assert_eq!((status, body.trim()), (200, "ok"), "kubelet /healthz");
    // Longer than keepalive_interval * keepalive_max: the keepalives
    // still get through, so the session survives, and new dials work.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut c = bridge
        .egress()
        .connect(&node.echo.addr().to_string())
        .await?;
    assert_eq!(c.status, 200, "{c:?}");
    echo_round_trip(&mut c.stream, b"still here").await?;
    let log = bridge.log();
    assert!(
        !log.contains("ssh session lost") && !log.contains("stream reset"),
        "stalled readers cost the node its session or a stream:\n{}",
        bridge.log_tail(40)
    );
    // A stalled client starts reading: it gets a long continuous stream,
    // intact from its first byte, far past what any buffer held.
    let mut check = FirehoseCheck::default();
    read_firehose(&mut stalled[0], &mut check, 32 * MIB as u64, 60).await?;
    // The others were held, not reset: their data is intact too.
    for s in &mut stalled[1..] {
        read_firehose(s, &mut FirehoseCheck::default(), 2 * MIB as u64, 30).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_large_stream_arrives_intact_both_ways() -> anyhow::Result<()> {
    within(120, async {
        let (cluster, bridge) = cluster_and_bridge(1).await?;
        let node = &cluster.nodes[0];
        let mut data = vec![0u8; 8 * MIB];
        rand::thread_rng().fill_bytes(&mut data);
        one_stream(
            bridge.egress(),
            node.hash.addr().to_string(),
            data.clone(),
            false,
        )
        .await?;
        one_stream(bridge.egress(), node.echo.addr().to_string(), data, true).await?;
        Ok(())
    })
    .await
}
