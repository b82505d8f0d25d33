//! The demo's traffic: HTTPS requests to kubelets and bulk echo to pods
//! through the bridge, a steady background load, and the per-node table.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sshbridge::daemon::Daemon;
use sshbridge_sim::apiserver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::cluster::SimNode;

/// Bytes pushed through each node's pod echo server.
pub(super) const BULK_BYTES: usize = 4 * 1024 * 1024;

/// What one node's requests came to.
#[derive(Default)]
pub(super) struct Outcome {
    pub(super) ok: usize,
    pub(super) failed: usize,
    pub(super) latencies: Vec<Duration>,
    pub(super) bulk: Option<Result<Duration, String>>,
}

/// `requests` kubelet GETs and one bulk echo per node, one node after
/// the other.
pub(super) async fn exercise(
    egress: &Path,
    nodes: &[SimNode],
    requests: usize,
    tls: &Arc<rustls::ClientConfig>,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for node in nodes {
        let mut outcome = Outcome::default();
        for i in 0..requests {
            let path = if i % 2 == 0 { "/healthz" } else { "/pods" };
            let target = format!("{}:{}", node.name, node.kubelet.local_addr().port());
            let t0 = Instant::now();
            match kubelet_get(egress, &target, node.address, path, tls.clone()).await {
                Ok(body) if path == "/healthz" || body.contains(&node.name) => {
                    outcome.ok += 1;
                    outcome.latencies.push(t0.elapsed());
                }
                Ok(body) => {
                    outcome.failed += 1;
                    eprintln!("  {}: answer from the wrong node: {body:?}", node.name);
                }
                Err(e) => {
                    outcome.failed += 1;
                    eprintln!("  {}: request failed: {e:#}", node.name);
                }
            }
        }
        outcome.bulk = Some(
            echo_bulk(egress, node.pod)
                .await
                .map_err(|e| format!("{e:#}")),
        );
        outcomes.push(outcome);
    }
    outcomes
}

/// Requests sent by [`background_load`] so far.
#[derive(Default)]
pub(super) struct LoadCount {
    pub(super) ok: AtomicU64,
    pub(super) failed: AtomicU64,
}

/// Kubelet GETs to every node in turn until `stop`, like an apiserver
/// streaming logs and exec sessions while the migration runs.
pub(super) fn background_load(
    egress: PathBuf,
    targets: Vec<(String, Ipv4Addr)>,
    tls: Arc<rustls::ClientConfig>,
    stop: CancellationToken,
) -> (Arc<LoadCount>, tokio::task::JoinHandle<()>) {
    let count = Arc::new(LoadCount::default());
    let counter = count.clone();
    let task = tokio::spawn(async move {
        for (target, address) in targets.iter().cycle() {
            if stop.is_cancelled() {
                return;
            }
            match kubelet_get(&egress, target, *address, "/healthz", tls.clone()).await {
                Ok(_) => counter.ok.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    eprintln!("  load: {target}: {e:#}");
                    counter.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (count, task)
}

/// One HTTPS GET to a kubelet through the bridge, verifying its certificate.
pub(super) async fn kubelet_get(
    egress: &Path,
    target: &str,
    address: Ipv4Addr,
    path: &str,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<String> {
    let work = async {
        let (resp, stream) = apiserver::connect_uds(egress, target).await?;
        if resp.status != 200 {
            bail!("CONNECT {target}: {} {}", resp.status, resp.reason);
        }
        let name = rustls::pki_types::ServerName::IpAddress(IpAddr::V4(address).into());
        let mut tls = tokio_rustls::TlsConnector::from(tls)
            .connect(name, stream)
            .await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await?;
        let mut response = String::new();
        tls.read_to_string(&mut response).await?;
        if !response.starts_with("HTTP/1.1 200") {
            bail!("unexpected kubelet answer {:?}", response.lines().next());
        }
        Ok(response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .context("request timed out")?
}

/// Sends BULK_BYTES to a pod's echo server through the bridge and checks
/// every byte came back.
pub(super) async fn echo_bulk(egress: &Path, pod: SocketAddr) -> anyhow::Result<Duration> {
    let work = async {
        let t0 = Instant::now();
        let (resp, stream) = apiserver::connect_uds(egress, &pod.to_string()).await?;
        if resp.status != 200 {
            bail!("CONNECT {pod}: {} {}", resp.status, resp.reason);
        }
        let (mut rd, mut wr) = stream.into_split();
        let data: Vec<u8> = (0..BULK_BYTES).map(|i| (i * 31 % 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            wr.write_all(&data).await?;
            wr.shutdown().await
        });
        let mut back = Vec::with_capacity(BULK_BYTES);
        rd.read_to_end(&mut back).await?;
        writer.await??;
        if back != expected {
            bail!(
                "echo through {pod} returned {} bytes that differ from the {} sent",
                back.len(),
                expected.len()
            );
        }
        Ok(t0.elapsed())
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .context("bulk transfer timed out")?
}

pub(super) async fn echo_server(listener: TcpListener, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        if let Ok((mut sock, _)) = accepted {
            tokio::spawn(async move {
                let (mut rd, mut wr) = sock.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
            });
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(super) fn render(daemon: &Daemon, nodes: &[SimNode], outcomes: &[Outcome]) -> String {
    let mut out = format!(
        "{:<8} {:<6} {:<6} {:>9} {:>10} {:>10} {:>8} {:>8} {:>22}\n",
        "NODE",
        "PATH",
        "STATE",
        "REQUESTS",
        "BYTES OUT",
        "BYTES IN",
        "P50 MS",
        "P99 MS",
        "POD ECHO 4 MiB"
    );
    for ((status, node), o) in daemon.nodes().iter().zip(nodes).zip(outcomes) {
        let mut lat = o.latencies.clone();
        lat.sort();
        let bulk = match &o.bulk {
            Some(Ok(d)) => format!("ok in {} ms", d.as_millis()),
            Some(Err(e)) => format!("FAILED: {e}"),
            None => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<8} {:<6} {:<6} {:>9} {:>10} {:>10} {:>8.2} {:>8.2} {:>22}",
            node.name,
            format!("{:?}", status.route).to_lowercase(),
            status.state.as_str(),
            format!("{}/{}", o.ok, o.ok + o.failed),
            status.stats.bytes_sent,
            status.stats.bytes_received,
            percentile(&lat, 50.0).as_secs_f64() * 1e3,
            percentile(&lat, 99.0).as_secs_f64() * 1e3,
            bulk
        );
    }
    out
}
