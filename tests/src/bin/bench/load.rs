//! Load generators and the servers they talk to: a counting sink, an echo
//! server, bulk writers, CONNECT dialers and small HTTPS requests.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::RngCore;
use sshbridge_sim::apiserver;
use sshbridge_tests::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Bound on opening one stream (any path).
const OPEN: Duration = Duration::from_secs(15);

/// How a client reaches a target.
#[derive(Debug, Clone)]
pub enum Via {
    /// CONNECT `target` on the bridge's unix socket.
    Bridge {
        /// Egress socket.
        uds: PathBuf,
        /// `host:port`.
        target: String,
    },
    /// A plain TCP connection (to an `ssh -L` local port, or direct).
    Tcp(SocketAddr),
}

impl Via {
    /// Opens one stream, bounded by [`OPEN`].
    pub async fn open(&self) -> anyhow::Result<Stream> {
        let open = async {
            match self {
                Via::Bridge { uds, target } => {
                    let (rsp, s) = apiserver::connect_uds(uds, target).await?;
                    if rsp.status != 200 {
                        bail!("CONNECT {target}: {} {}", rsp.status, rsp.reason);
                    }
                    Ok(Box::new(s) as Stream)
                }
                Via::Tcp(addr) => {
                    let s = tokio::net::TcpStream::connect(addr).await?;
                    s.set_nodelay(true)?;
                    Ok(Box::new(s) as Stream)
                }
            }
        };
        tokio::time::timeout(OPEN, open)
            .await
            .context("opening a stream timed out")?
    }
}

/// A server that reads and discards, counting bytes.
pub struct Sink {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<AtomicU64>,
}

impl Sink {
    /// Serves on `ip:0` until `stop`.
    pub async fn start(ip: IpAddr, stop: CancellationToken) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let received = Arc::new(AtomicU64::new(0));
        let sink = Sink {
            addr: listener.local_addr()?,
            received: received.clone(),
        };
        tokio::spawn(async move {
            loop {
                let s = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                };
                let (received, stop) = (received.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut s = s;
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let n = tokio::select! {
                            _ = stop.cancelled() => return,
                            n = s.read(&mut buf) => n,
                        };
                        match n {
                            Ok(0) | Err(_) => return,
                            Ok(n) => received.fetch_add(n as u64, Ordering::Relaxed),
                        };
                    }
                });
            }
        });
        Ok(sink)
    }

    /// Waits (at most 15 s) until nothing has arrived for 100 ms, so bytes
    /// still in flight from the previous run do not count in the next.
    pub async fn wait_quiet(&self) {
        let quiet = async {
            loop {
                let before = self.received();
                tokio::time::sleep(Duration::from_millis(100)).await;
                if self.received() == before {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(15), quiet).await;
    }

    /// Bytes received so far, all connections.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// Starts an echo server on `ip:0` (until `stop`); returns its address.
pub async fn echo_server(ip: IpAddr, stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let mut s = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::io::copy(&mut r, &mut w) => {}
                }
            });
        }
    });
    Ok(addr)
}

/// Aggregate throughput of `streams` bulk writers into `sink` over `via`,
/// in MiB/s, counted at the sink over `window` after `warmup`.
pub async fn throughput(
    via: &Via,
    sink: &Sink,
    streams: usize,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<f64> {
    sink.wait_quiet().await;
    let mut data = vec![0u8; 64 * 1024];
    rand::thread_rng().fill_bytes(&mut data);
    let data: Arc<[u8]> = data.into();
    let mut opened = Vec::with_capacity(streams);
    for _ in 0..streams {
        opened.push(via.open().await?);
    }
    let stop = CancellationToken::new();
    let mut writers = Vec::new();
    for mut s in opened {
        let (data, stop) = (data.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    w = s.write_all(&data) => w?,
                }
            }
        }));
    }
    let _stop_writers = stop.clone().drop_guard();
    tokio::time::sleep(warmup).await;
    let (b0, t0) = (sink.received(), Instant::now());
    tokio::time::sleep(window).await;
    let (b1, t1) = (sink.received(), Instant::now());
    stop.cancel();
    for w in writers {
        let r: std::io::Result<()> = tokio::time::timeout(OPEN, w)
            .await
            .context("a writer did not stop")??;
        r.context("a bulk writer failed")?;
    }
    Ok((b1 - b0) as f64 / (t1 - t0).as_secs_f64() / (1024.0 * 1024.0))
}

/// Latency samples, sorted.
#[derive(Debug, Default)]
pub struct Samples(pub Vec<Duration>);

impl Samples {
    /// The `p`-quantile (0..=1) in milliseconds.
    pub fn ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let i = ((self.0.len() - 1) as f64 * p).round() as usize;
        self.0[i].as_secs_f64() * 1000.0
    }
}

/// CONNECT -> 200 latency: `concurrency` clients doing `per_client` dials
/// each over `via` (each stream is dropped right after its 200).
pub async fn dial_latency(
    via: &Via,
    concurrency: usize,
    per_client: usize,
) -> anyhow::Result<Samples> {
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let via = via.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t0 = Instant::now();
                let s = via.open().await?;
                out.push(t0.elapsed());
                drop(s);
            }
            Ok::<_, anyhow::Error>(out)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    Ok(Samples(all))
}

/// Result of an HTTPS request-rate run.
#[derive(Debug)]
pub struct Rate {
    /// Requests completed per second.
    pub per_sec: f64,
    /// Their latencies.
    pub latency: Samples,
    /// Requests that failed.
    pub errors: u64,
    /// What the first failed request said.
    pub first_error: Option<String>,
}

impl Rate {
    /// In quick mode (CI) a failed request fails the run; `what` names the
    /// path the requests took.
    pub fn check(&self, mode: crate::Mode, what: &str) -> anyhow::Result<()> {
        if mode == crate::Mode::Quick && self.errors > 0 {
            bail!(
                "{} of {} HTTPS requests {what} failed; quick mode allows none. First: {}",
                self.errors,
                self.errors + self.latency.0.len() as u64,
                self.first_error.as_deref().unwrap_or("(no message)")
            );
        }
        Ok(())
    }
}

/// `GET /healthz` over a new stream and TLS session per request (as the
/// apiserver's kubelet calls through an egress do), `concurrency` at a
/// time, for `window`.
pub async fn https_rate(
    via: &Via,
    kubelet_ip: IpAddr,
    tls: Arc<rustls::ClientConfig>,
    concurrency: usize,
    window: Duration,
) -> anyhow::Result<Rate> {
    let deadline = Instant::now() + window;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (via, tls) = (via.clone(), tls.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut first) = (Vec::new(), 0u64, None);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let req = async {
                    let s = via.open().await?;
                    sshbridge_tests::kubelet_get(s, tls.clone(), kubelet_ip, "/healthz").await
                };
                match req.await {
                    Ok((200, _)) => ok.push(t0.elapsed()),
                    other => {
                        errors += 1;
                        first.get_or_insert_with(|| match other {
                            Ok((status, body)) => format!("kubelet answered {status}: {body}"),
                            Err(e) => format!("{e:#}"),
                        });
                    }
                }
            }
            (ok, errors, first)
        }));
    }
    let started = Instant::now();
    let (mut all, mut errors, mut first_error) = (Vec::new(), 0, None);
    for t in tasks {
        let (ok, e, first) = t.await?;
        all.extend(ok);
        errors += e;
        first_error = first_error.or(first);
    }
    let elapsed = started.elapsed().max(window);
    if all.is_empty() {
        bail!("every HTTPS request failed ({errors} errors)");
    }
    all.sort();
    Ok(Rate {
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        latency: Samples(all),
        errors,
        first_error,
    })
}

/// Aggregate echo throughput of `streams` clients over `via` to the echo
/// server behind it, in MiB/s of payload that came back, counted at the
/// clients over `window` after `warmup`. Each client keeps at most
/// `inflight` bytes sent but not yet echoed: application-level flow
/// control, for paths that have none of their own (Konnectivity).
pub async fn echo_throughput(
    via: &Via,
    streams: usize,
    inflight: u64,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<f64> {
    let mut data = vec![0u8; 64 * 1024];
    rand::thread_rng().fill_bytes(&mut data);
    let data: Arc<[u8]> = data.into();
    let mut opened = Vec::with_capacity(streams);
    for _ in 0..streams {
        opened.push(via.open().await?);
    }
    let stop = CancellationToken::new();
    let echoed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for s in opened {
        let (data, stop, echoed) = (data.clone(), stop.clone(), echoed.clone());
        clients.push(tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(s);
            let mut buf = vec![0u8; 256 * 1024];
            let (mut sent, mut got, mut off) = (0u64, 0u64, 0usize);
            loop {
                let can_write = sent - got < inflight;
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(()),
                    n = r.read(&mut buf) => {
                        let n = n?;
                        if n == 0 {
                            bail!("the echo stream ended after {got} bytes");
                        }
                        got += n as u64;
                        echoed.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    n = w.write(&data[off..]), if can_write => {
                        let n = n?;
                        sent += n as u64;
                        off = (off + n) % data.len();
                    }
                }
            }
        }));
    }
    let _stop_clients = stop.clone().drop_guard();
    tokio::time::sleep(warmup).await;
    let (b0, t0) = (echoed.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(window).await;
    let (b1, t1) = (echoed.load(Ordering::Relaxed), Instant::now());
    stop.cancel();
    for c in clients {
        tokio::time::timeout(OPEN, c)
            .await
            .context("an echo client did not stop")??
            .context("an echo client failed")?;
    }
    Ok((b1 - b0) as f64 / (t1 - t0).as_secs_f64() / (1024.0 * 1024.0))
}

/// The middle value (of three rounds in full mode, of one in quick).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}
