//! The interactive rows: a 64-byte request answered with a 200-byte head
//! and a 1,000-byte body in two writes (as HTTP servers answer; the server
//! sets `TCP_NODELAY` as Go's and nginx's do). On the SSH path OpenSSH's
//! sshd leaves Nagle on, and meets the client's delayed ACK in the tail.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::load::{Samples, Via};
use crate::report::{Goal, On, Row};
use crate::Mode;

/// Between head and body (the time to compute the body): without it the
/// node's sshd often reads both in one go and sends one packet, and the
/// row would measure luck rather than the ACK path. Slept with the
/// thread's nanosleep, not tokio's timer: tokio rounds a sleep up to its
/// next 1 ms tick, which put 1-2 ms of the server's own wait into every
/// exchange and under the row's 1 ms target.
const GAP: Duration = Duration::from_micros(300);

/// Bound on one exchange; a delayed-ACK stall is 40 ms.
const ROUND: Duration = Duration::from_secs(5);

/// Starts the two-write server on `ip:0` until `stop`; returns its address.
pub async fn two_write_server(ip: IpAddr, stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let mut s = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
            };
            let stop = stop.clone();
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (head, body) = (vec![b'h'; 200], vec![b'b'; 1000]);
                let mut req = [0u8; 64];
                let serve = async {
                    while s.read_exact(&mut req).await.is_ok() {
                        s.write_all(&head).await?;
                        // Blocks this worker for 0.3 ms: the bench's runtime
                        // has other workers, and nothing else runs here.
                        std::thread::sleep(GAP);
                        s.write_all(&body).await?;
                    }
                    Ok::<_, std::io::Error>(())
                };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = serve => {}
                }
            });
        }
    });
    Ok(addr)
}

/// The group's rows: exchanges direct to `two`, through OpenSSH's forward
/// at `ssh_local`, and through the bridge's egress socket `uds`.
pub async fn measure(
    group: &str,
    two: SocketAddr,
    ssh_local: SocketAddr,
    uds: &std::path::Path,
    mode: Mode,
) -> anyhow::Result<Vec<Row>> {
    let (n, n_ssh) = (count(mode), ssh_count(mode));
    let direct = exchanges(&Via::Tcp(two), n).await?;
    let ssh = exchanges(&Via::Tcp(ssh_local), n_ssh).await?;
    let via_bridge = Via::Bridge {
        uds: uds.to_path_buf(),
        target: two.to_string(),
    };
    let through = exchanges(&via_bridge, n).await?;
    Ok(rows(group, &through, Some(&ssh), &direct))
}

/// Exchanges direct and through the bridge: enough that p99 is a quantile
/// (the 10th slowest of 1,000) rather than the second slowest of a few
/// dozen, which one scheduling hiccup on a 2-core machine decides. About
/// 0.5 ms each, so 1,000 take half a second.
pub fn count(mode: Mode) -> usize {
    match mode {
        Mode::Quick => 1000,
        Mode::Full => 4000,
    }
}

/// Exchanges through OpenSSH's client, which pays ~44 ms on each (a
/// delayed ACK): its p50 and p99 are the same figure, and a few dozen show it.
pub fn ssh_count(mode: Mode) -> usize {
    match mode {
        Mode::Quick => 30,
        Mode::Full => 200,
    }
}

/// `n` exchanges over one stream opened through `via`, after 5 unmeasured.
pub async fn exchanges(via: &Via, n: usize) -> anyhow::Result<Samples> {
    let mut s = via.open().await?;
    let mut answer = vec![0u8; 1200];
    let mut all = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let t0 = Instant::now();
        let round = async {
            s.write_all(&[b'q'; 64]).await?;
            s.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(())
        };
        tokio::time::timeout(ROUND, round)
            .await
            .context("a two-write exchange timed out")?
            .context("a two-write exchange failed")?;
        if i >= 5 {
            all.push(t0.elapsed());
        }
    }
    all.sort();
    Ok(Samples(all))
}

/// p50 and p99 rows of `group` for the bridge, each against `ssh -N -L`
/// (when measured) and against direct TCP; p99 has the 1 ms target.
pub fn rows(group: &str, bridge: &Samples, ssh: Option<&Samples>, direct: &Samples) -> Vec<Row> {
    let mut rows = Vec::new();
    for (p, label) in [(0.5, "p50"), (0.99, "p99")] {
        let name = format!("two-write exchange {label}");
        let note = format!(
            "64-byte request, 200-byte head + 1,000-byte body in two writes 0.3 ms apart; {} exchanges ({} through ssh)",
            bridge.0.len(),
            ssh.map_or(0, |s| s.0.len())
        );
        if let Some(ssh) = ssh {
            let mut row = Row::new(group, &name, "ms", bridge.ms(p))
                .vs("ssh -N -L", ssh.ms(p))
                .note(&note);
            if label == "p99" {
                row = row.target(Goal::AtMost, On::Value, 1.0);
            }
            rows.push(row);
        }
        rows.push(
            Row::new(group, &format!("{name} vs direct"), "ms", bridge.ms(p))
                .vs("direct TCP", direct.ms(p)),
        );
    }
    rows
}
