//! The scenarios of the upstream interop suite, shared by `upstream.rs`
//! (our server, upstream agent) and `upstream_server.rs` (upstream server,
//! our agent): checked echoes, half-close, a vanishing client, a target
//! that closes first. Each prints what it observed.

use std::time::{Duration, Instant};

use sshbridge_tests::upstream::Counts;
use sshbridge_tests::{sha256_hex, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::upstream_common::{observed, CLOSED, PROMPT};

/// Writes `len` random bytes to an echo stream while reading them back;
/// the SHA-256 of what came back must equal what was sent.
pub async fn sha_echo(stream: &mut Stream, len: usize) -> anyhow::Result<String> {
    let mut data = vec![0u8; len];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut data);
    let want = sha256_hex(&data);
    let (mut r, mut w) = tokio::io::split(stream);
    let write = async {
        for chunk in data.chunks(16 * 1024) {
            w.write_all(chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let read = async {
        let mut back = vec![0u8; len];
        r.read_exact(&mut back).await?;
        Ok::<_, std::io::Error>(back)
    };
    let io = async { tokio::join!(write, read) };
    let (wrote, back) = tokio::time::timeout(Duration::from_secs(60), io)
        .await
        .map_err(|_| anyhow::anyhow!("{len}-byte echo did not finish within 60s"))?;
    wrote?;
    let got = sha256_hex(&back?);
    anyhow::ensure!(got == want, "echo checksum {got} != sent {want}");
    Ok(got)
}

/// What a client saw after sending `n` bytes and half-closing.
#[derive(Debug)]
pub struct HalfClose {
    /// Bytes that came back.
    pub echoed: usize,
    /// How the read side ended: `Some(Ok(t))` EOF after `t`, `Some(Err)`
    /// an error, `None` still open when the bound passed.
    pub end: Option<Result<Duration, String>>,
}

/// Sends `n` bytes, `shutdown(SHUT_WR)`, then reads until the stream ends
/// or `bound` passes.
pub async fn half_close(
    stream: &mut Stream,
    n: usize,
    bound: Duration,
) -> anyhow::Result<HalfClose> {
    let data = vec![0x5au8; n];
    tokio::time::timeout(Duration::from_secs(10), async {
        stream.write_all(&data).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| anyhow::anyhow!("writing {n} bytes and SHUT_WR took over 10s"))??;
    let start = Instant::now();
    let mut echoed = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        let left = bound.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => break None,
            Ok(Ok(0)) => break Some(Ok(start.elapsed())),
            Ok(Ok(k)) => echoed += k,
            Ok(Err(e)) => break Some(Err(e.to_string())),
        }
    };
    Ok(HalfClose { echoed, end })
}

/// Issue 16 with an upstream peer: the client sends 5,000 bytes to the
/// echo target and half-closes. Whatever the chosen behaviour, the client's
/// read side ends and every process's connections close within [`CLOSED`].
pub async fn scenario_half_close(
    label: &str,
    mut stream: Stream,
    base: &Counts,
) -> anyhow::Result<()> {
    let hc = half_close(&mut stream, 5000, CLOSED).await?;
    let end = match &hc.end {
        Some(Ok(t)) => format!("EOF after {t:.1?}"),
        Some(Err(e)) => format!("error {e:?}"),
        None => format!("still open after {CLOSED:?}"),
    };
    observed(&format!(
        "{label}: 5000 bytes then SHUT_WR -> {} bytes echoed, read side: {end}",
        hc.echoed
    ));
    anyhow::ensure!(
        hc.end.is_some(),
        "{label}: after a half-close the client's stream stayed open for {CLOSED:?} ({} bytes echoed)",
        hc.echoed
    );
    drop(stream);
    let t = base
        .wait_back(CLOSED)
        .await
        .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
    observed(&format!(
        "{label}: half-close: every connection closed {t:.1?} after the client's"
    ));
    Ok(())
}

/// A client that vanishes while the target still sends (the firehose):
/// it reads 1 MiB, stops reading until the whole path is backed up (the
/// firehose's writes stall), then its socket is closed abruptly with
/// unread data, as the kernel does for a killed process. Every connection
/// closes within [`PROMPT`]. With `raw`
/// the stream carries upstream's unread CONNECT answer too (see
/// [`scenario_close_first`]); where it came is recorded.
pub async fn scenario_vanish(
    label: &str,
    mut stream: Stream,
    base: &Counts,
    firehose: &sshbridge_tests::PodServer,
    raw: bool,
) -> anyhow::Result<()> {
    let mut check = sshbridge_tests::FirehoseCheck::default();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(Duration::from_secs(20), async {
        while seen.len() + (check.verified() as usize) < 1 << 20 {
            let n = stream.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "the firehose ended early");
            if raw {
                seen.extend_from_slice(&buf[..n]);
            } else {
                check.feed(&buf[..n])?;
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("{label}: 1 MiB of firehose did not arrive within 20s"))??;
    if raw {
        let at = seen
            .windows(UPSTREAM_200.len())
            .position(|w| w == UPSTREAM_200);
        observed(&format!(
            "{label}: firehose through upstream's CONNECT: 200 head at byte {at:?} of the first {} bytes",
            seen.len()
        ));
    }
    let stalled = backed_up(firehose).await;
    drop(stream);
    let t = base
        .wait_back(PROMPT)
        .await
        .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
    observed(&format!(
        "{label}: client stopped reading, path backed up ({stalled}), vanished"
    ));
    observed(&format!(
        "{label}: client vanished mid-firehose: every connection closed within {t:.1?}"
    ));
    Ok(())
}

/// Waits (at most 20 s) until `firehose` has sent nothing new for 1 s:
/// every buffer between it and a client that stopped reading is full.
async fn backed_up(firehose: &sshbridge_tests::PodServer) -> String {
    let start = Instant::now();
    let mut last = firehose.sent();
    let mut still = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = firehose.sent();
        if now != last {
            (last, still) = (now, Instant::now());
        } else if still.elapsed() >= Duration::from_secs(1) {
            return format!(
                "firehose stalled at {last} bytes after {:.1?}",
                start.elapsed()
            );
        }
    }
    format!("firehose still sending after 20 s ({last} bytes)")
}

/// The CONNECT answer of upstream's proxy-server, byte for byte.
pub const UPSTREAM_200: &[u8] = b"HTTP/1.1 200 Connection Established\r\n\r\n";

/// A target that closes first (writes `bye\n`, SHUT_WR, reads on) while
/// the client keeps sending: the client gets `bye\n`, its read side ends,
/// and every connection closes within [`PROMPT`] after that. A `stream`
/// on which only the CONNECT request was written (its answer unread) is
/// accepted too: upstream's 200 head is then taken out of what arrived,
/// wherever it came, and where it came is recorded.
pub async fn scenario_close_first(
    label: &str,
    stream: Stream,
    base: &Counts,
) -> anyhow::Result<()> {
    let (mut r, mut w) = tokio::io::split(stream);
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 16 * 1024];
        let mut sent = 0usize;
        let start = Instant::now();
        loop {
            let write = tokio::select! {
                _ = stopped.cancelled() => break,
                w = w.write_all(&chunk) => w,
            };
            match write {
                Ok(()) => sent += chunk.len(),
                Err(e) => {
                    return (
                        sent,
                        format!("write error after {:.1?}: {e}", start.elapsed()),
                    )
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (
            sent,
            "writes still accepted 2 s after the read side ended".to_string(),
        )
    });
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let left = CLOSED.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, r.read(&mut buf)).await {
            Err(_) => break None,
            Ok(Ok(0)) => break Some(format!("EOF after {:.1?}", start.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => break Some(format!("error after {:.1?}: {e}", start.elapsed())),
        }
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let (sent, how) = tokio::time::timeout(Duration::from_secs(10), writer).await??;
    let head_at = got
        .windows(UPSTREAM_200.len())
        .position(|w| w == UPSTREAM_200);
    if let Some(at) = head_at {
        got.drain(at..at + UPSTREAM_200.len());
    }
    let head = match head_at {
        None => String::new(),
        Some(at) => format!(" (upstream's 200 head came after {at} byte(s) of the target's)"),
    };
    observed(&format!(
        "{label}: target closed first: client read {:?}{head}, read side {}, client wrote {sent} bytes, {how}",
        String::from_utf8_lossy(&got),
        end.as_deref().unwrap_or("still open")
    ));
    anyhow::ensure!(
        got == b"bye\n",
        "{label}: the client got {got:?}, not the target's bye"
    );
    anyhow::ensure!(
        end.is_some(),
        "{label}: the client's stream stayed open for {CLOSED:?}"
    );
    drop(r);
    let t = base
        .wait_back(PROMPT)
        .await
        .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
    observed(&format!(
        "{label}: target closed first: every connection closed within {t:.1?}"
    ));
    Ok(())
}
