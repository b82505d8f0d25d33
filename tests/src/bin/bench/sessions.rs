//! Issue 20 goal 3 on the SSH path: one node's streams spread over
//! `ssh.sessions_per_node` sessions, against one `ssh -N -L`.

use std::path::Path;
use std::time::{Duration, Instant};

use sshbridge_tests::BridgeConfig;

use crate::daemon::Daemon;
use crate::load::{self, median, Sink, Via};
use crate::openssh::Forward;
use crate::report::{Goal, On, Row};

/// How long each throughput measurement warms up and runs, and how many
/// rounds give the median.
pub struct Measure {
    /// Before counting.
    pub warmup: Duration,
    /// Counted.
    pub window: Duration,
    /// Rounds; the median is reported.
    pub rounds: usize,
}

/// Issue 20 goal 3: 64 streams to one node spread over
/// `ssh.sessions_per_node` sessions (each its own sshd process on the
/// node), against one `ssh -N -L` to the same sshd, alternated per round.
#[allow(clippy::too_many_arguments)]
pub async fn rows(
    bin: &Path,
    dir: &Path,
    base: &BridgeConfig,
    node: &str,
    cipher: &str,
    sink: &Sink,
    forward: &Forward,
    m: &Measure,
) -> anyhow::Result<Vec<Row>> {
    const STREAMS: usize = 64;
    let mut rows = Vec::new();
    for sessions in [2, 4] {
        let mut config = base.clone();
        config.dir = dir.join(format!("bridge-{sessions}-sessions"));
        std::fs::create_dir_all(&config.dir)?;
        config.uds = config.dir.join("egress.sock");
        config.nodes.retain(|n| n.name == node);
        config
            .extra_ssh_lines
            .push(format!("sessions_per_node = {sessions}"));
        let mut bridge = Daemon::start(bin, config).await?;
        bridge
            .wait_all_up(1, 0, Instant::now(), Duration::from_secs(30), || true)
            .await?;
        // The other sessions connect beside the first; a dial takes only
        // sessions that are up.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let via_bridge = Via::Bridge {
            uds: bridge.egress().to_path_buf(),
            target: sink.addr.to_string(),
        };
        let (mut b, mut s, mut d) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..m.rounds {
            let via_ssh = Via::Tcp(forward.local);
            s.push(load::throughput(&via_ssh, sink, STREAMS, m.warmup, m.window).await?);
            b.push(load::throughput(&via_bridge, sink, STREAMS, m.warmup, m.window).await?);
            d.push(dial_rate(&via_bridge).await?);
        }
        bridge.stop().await;
        rows.push(
            Row::new(
                "throughput ssh",
                &format!(
                    "{STREAMS} stream(s), {sessions} sessions per node, {}",
                    cipher
                ),
                "MiB/s",
                median(b),
            )
            .vs("ssh -N -L", median(s))
            .target(Goal::AtLeast, On::Ratio, 1.2)
            .note(&format!(
                "ssh.sessions_per_node = {sessions}; ssh -N -L holds one session"
            )),
        );
        rows.push(
            Row::new(
                "dial ssh",
                &format!("dials/s, concurrency 64, {sessions} sessions per node"),
                "1/s",
                median(d),
            )
            .note("as the 1-session row; each sshd process is single-threaded"),
        );
    }
    Ok(rows)
}

/// Dials per second with 64 clients dialing back to back, as the dial
/// rows of the SSH path measure them with one session.
async fn dial_rate(via: &Via) -> anyhow::Result<f64> {
    const CLIENTS: usize = 64;
    let t0 = Instant::now();
    let s = load::dial_latency(via, CLIENTS, 20).await?;
    Ok(s.0.len() as f64 / t0.elapsed().as_secs_f64())
}
