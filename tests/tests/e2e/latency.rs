//! Interactive latency: an answer written in two pieces (a 200-byte head,
//! then the body, as HTTP servers write) must not wait for a delayed ACK.
//! OpenSSH's sshd leaves Nagle on for sessions without a pty, so its
//! second packet waits until the bridge acknowledges the first; Linux
//! delays that ACK by 40 ms unless the bridge re-arms `TCP_QUICKACK`.
//! The agent's socket to a target with Nagle on is the same case. (On
//! the SSH path such a target would meet sshd's own delayed ACK, which no
//! bridge can change; so the SSH test's target sets `TCP_NODELAY`.)

use std::time::{Duration, Instant};

use sshbridge_tests::{Behavior, Bridge, PodServer, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::support::{cluster_and_bridge, konnectivity_setup, within};

/// Far above a loopback exchange through the bridge on a loaded machine,
/// far below the 40 ms minimum of Linux's delayed ACK.
const BOUND: Duration = Duration::from_millis(20);
const EXCHANGES: usize = 60;

/// `EXCHANGES` request/answer rounds over one CONNECT stream to a
/// [`Behavior::TwoWrites`] pod; returns the sorted round-trip times.
async fn two_write_exchanges(bridge: &Bridge, pod: &PodServer) -> anyhow::Result<Vec<Duration>> {
    let c = bridge.egress().connect(&pod.addr().to_string()).await?;
    anyhow::ensure!(c.status == 200, "CONNECT {}: {c:?}", pod.addr());
    let mut s: Stream = c.stream;
    let mut answer = vec![0u8; 1200];
    let mut times = Vec::with_capacity(EXCHANGES);
    for _ in 0..EXCHANGES {
        let t = Instant::now();
        let round = async {
            s.write_all(&[b'q'; 64]).await?;
            s.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(())
        };
        tokio::time::timeout(Duration::from_secs(5), round)
            .await
            .map_err(|_| anyhow::anyhow!("an exchange took over 5 s"))??;
        times.push(t.elapsed());
    }
    anyhow::ensure!(
        answer[..200].iter().all(|b| *b == b'h') && answer[200..].iter().all(|b| *b == b'b'),
        "the answer arrived mangled"
    );
    times.sort();
    Ok(times)
}

/// The 99th percentile of sorted `times`.
fn p99(times: &[Duration]) -> Duration {
    times[(times.len() * 99 / 100).min(times.len() - 1)]
}

/// How many rounds took at least `BOUND`; one stall on a busy machine is
/// noise, a delayed-ACK stall shows in many.
fn stalls(times: &[Duration]) -> usize {
    times.iter().filter(|t| **t >= BOUND).count()
}

fn check(path: &str, times: &[Duration]) -> anyhow::Result<()> {
    let p50 = times[times.len() / 2];
    anyhow::ensure!(
        stalls(times) <= 1,
        "{path}: {} of {} two-write exchanges took >= {BOUND:?} (p50 {p50:?}, p99 {:?}): \
         the bridge is not acknowledging the node's packets at once",
        stalls(times),
        times.len(),
        p99(times)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_write_answers_through_the_ssh_path_skip_the_delayed_ack() -> anyhow::Result<()> {
    within(120, async {
        let (cluster, bridge) = cluster_and_bridge(1).await?;
        let stop = CancellationToken::new();
        let _stop = stop.clone().drop_guard();
        let pod = PodServer::start(
            cluster.nodes[0].pod_ip,
            Behavior::TwoWrites { nagle: false },
            stop,
        )
        .await?;
        check("ssh path", &two_write_exchanges(&bridge, &pod).await?)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_write_answers_through_konnectivity_skip_the_delayed_ack() -> anyhow::Result<()> {
    within(120, async {
        let s = konnectivity_setup(1, &[0], &[0], |_| {}).await?;
        let stop = CancellationToken::new();
        let _stop = stop.clone().drop_guard();
        let pod = PodServer::start(
            s.cluster.nodes[0].pod_ip,
            Behavior::TwoWrites { nagle: true },
            stop,
        )
        .await?;
        check(
            "konnectivity path",
            &two_write_exchanges(&s.bridge, &pod).await?,
        )
    })
    .await
}
