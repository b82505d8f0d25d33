//! `sshbridge demo`: a simulated cluster on loopback, the real daemon in
//! front of it, real traffic through it, and a table of what happened.
//!
//! Each simulated node is an in-process SSH server and a TLS kubelet
//! stand-in on its own 127.77.0.N address, plus an echo "pod" on
//! 127.78.N.10 inside the node's pod CIDR. Everything lives in a temporary
//! directory that is removed at the end.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sshbridge::daemon::{Daemon, Listeners};
use sshbridge::sim::{
    apiserver, keys, kubelet::Kubelet, pki::Pki, sshd::SimSshd, sshd::SimSshdConfig,
};
use sshbridge::ssh::TunnelState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::DemoArgs;

/// Bytes pushed through each node's pod echo server.
const BULK_BYTES: usize = 4 * 1024 * 1024;

struct SimNode {
    name: String,
    address: Ipv4Addr,
    sshd: SimSshd,
    host_key: russh::keys::PublicKey,
    kubelet: Kubelet,
    pod: SocketAddr,
}

#[derive(Default)]
struct Outcome {
    ok: usize,
    failed: usize,
    latencies: Vec<Duration>,
    bulk: Option<Result<Duration, String>>,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("sshbridge-demo-")
        .tempdir()?;
    let stop = CancellationToken::new();
    let pki = Pki::new("sshbridge demo CA")?;
    let client_key = keys::generate_ed25519();
    let identity = dir.path().join("id_ed25519");
    keys::write_private_key(&identity, &client_key)?;
    let kubelet_ca = pki.write_ca(dir.path())?;

    println!(
        "Starting {} simulated nodes (in-process SSH servers and kubelets on 127.77.0.x)...",
        args.nodes
    );
    let mut nodes = Vec::new();
    let mut known_hosts = String::new();
    // One kubelet port for all nodes, as in a real cluster ([health] kubelet_port).
    let mut kubelet_port = 0;
    for i in 1..=args.nodes {
        let node = start_node(i, kubelet_port, &pki, &client_key, &stop).await?;
        kubelet_port = node.kubelet.local_addr().port();
        let ssh = node.sshd.local_addr();
        known_hosts.push_str(&keys::known_hosts_line(
            &ssh.ip().to_string(),
            ssh.port(),
            &node.host_key,
        ));
        known_hosts.push('\n');
        nodes.push(node);
    }
    std::fs::write(dir.path().join("known_hosts"), known_hosts)?;
    let config_path = dir.path().join("sshbridge.toml");
    std::fs::write(&config_path, config_text(dir.path(), &kubelet_ca, &nodes))?;
    let config = sshbridge_config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let egress = config
        .egress
        .http_connect_uds
        .clone()
        .context("demo config has an egress socket")?;
    let listeners = Listeners::bind(&config).await?;
    let daemon = Daemon::start(config, listeners, Duration::from_secs(5))?;

    wait_until_up(&daemon, Duration::from_secs(15)).await?;
    println!(
        "All {} tunnels up after {} ms (host keys verified against known_hosts).\n",
        nodes.len(),
        started.elapsed().as_millis()
    );

    let client_tls = pki.client_config(None)?;
    let mut outcomes = Vec::new();
    for node in &nodes {
        let mut outcome = Outcome::default();
        for i in 0..args.requests {
            let path = if i % 2 == 0 { "/healthz" } else { "/pods" };
            let target = format!("{}:{}", node.name, node.kubelet.local_addr().port());
            let t0 = Instant::now();
            match kubelet_get(&egress, &target, node.address, path, client_tls.clone()).await {
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
            echo_bulk(&egress, node.pod)
                .await
                .map_err(|e| format!("{e:#}")),
        );
        outcomes.push(outcome);
    }

    let (refused, _) = apiserver::connect_uds(&egress, "127.0.0.1:22").await?;
    print!("{}", render(&daemon, &nodes, &outcomes));
    let report = wait_for_probes(&daemon, Duration::from_secs(10)).await;
    println!("\nHealth report (what `sshbridge report` shows; kubelet probes over each tunnel, certificates verified):");
    print!(
        "{}",
        sshbridge::report::render::report_table(&report, false)
    );
    println!(
        "\nA destination outside every node, pod CIDR and service CIDR is refused: CONNECT 127.0.0.1:22 -> {} {}",
        refused.status, refused.reason
    );
    let failed: usize = outcomes
        .iter()
        .map(|o| o.failed + usize::from(matches!(o.bulk, Some(Err(_)))))
        .sum();
    daemon.shutdown().await;
    stop.cancel();
    println!(
        "\nDemo finished in {:.1} s; {failed} failed operations.",
        started.elapsed().as_secs_f64()
    );
    Ok(if failed == 0 && refused.status == 403 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn start_node(
    i: u8,
    kubelet_port: u16,
    pki: &Pki,
    client_key: &russh::keys::PrivateKey,
    stop: &CancellationToken,
) -> anyhow::Result<SimNode> {
    let name = format!("node-{}", (b'a' + i - 1) as char);
    let address = Ipv4Addr::new(127, 77, 0, i);
    let bind = |port| async move {
        TcpListener::bind((address, port)).await.with_context(|| {
            format!("cannot bind {address}:{port} (loopback; is 127.0.0.0/8 routed to lo?)")
        })
    };
    let host_key = keys::generate_ed25519();
    let host_public = host_key.public_key().clone();
    let sshd = SimSshd::start(
        bind(0).await?,
        SimSshdConfig {
            host_key,
            authorized: vec![client_key.public_key().clone()],
            allow: vec![
                ipnet::IpNet::from(IpAddr::V4(address)),
                format!("127.78.{i}.0/24").parse()?,
            ],
            name: name.clone(),
        },
        stop.clone(),
    );
    let cert = pki.issue_server(&[IpAddr::V4(address)], &[&name])?;
    let kubelet = Kubelet::start(
        bind(kubelet_port).await?,
        name.clone(),
        pki.server_config(&cert)?,
        stop.clone(),
    )?;
    let pod_listener = TcpListener::bind((Ipv4Addr::new(127, 78, i, 10), 0)).await?;
    let pod = pod_listener.local_addr()?;
    tokio::spawn(echo_server(pod_listener, stop.clone()));
    Ok(SimNode {
        name,
        address,
        sshd,
        host_key: host_public,
        kubelet,
        pod,
    })
}

fn config_text(dir: &Path, kubelet_ca: &Path, nodes: &[SimNode]) -> String {
    let mut t = format!(
        "[bridge]\nid = \"demo\"\n\n[egress]\nhttp_connect_uds = \"{d}/egress.sock\"\ndial_timeout = \"5s\"\n\n\
         [ssh]\nuser = \"demo\"\nidentity = \"{d}/id_ed25519\"\nknown_hosts = \"{d}/known_hosts\"\n\
         keepalive_interval = \"2s\"\n\n[health]\ninterval = \"500ms\"\nkubelet_port = {port}\nkubelet_ca = \"{ca}\"\n\
         down_after = 2\nup_after = 1\n\n[admin]\nlisten = \"unix:{d}/admin.sock\"\n\n[migration]\nstore = \"file:{d}/migration.json\"\n",
        d = dir.display(),
        ca = kubelet_ca.display(),
        port = nodes.first().map_or(10250, |n| n.kubelet.local_addr().port())
    );
    for (i, n) in nodes.iter().enumerate() {
        let _ = write!(
            t,
            "\n[[node]]\nname = \"{}\"\naddress = \"{}\"\nssh_address = \"{}\"\npod_cidrs = [\"127.78.{}.0/24\"]\n",
            n.name,
            n.address,
            n.sshd.local_addr(),
            i + 1
        );
    }
    t
}

async fn wait_until_up(daemon: &Daemon, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let nodes = daemon.nodes();
        if nodes.iter().all(|n| n.state == TunnelState::Up) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let down: Vec<String> = nodes
                .iter()
                .filter(|n| n.state != TunnelState::Up)
                .map(|n| {
                    format!(
                        "{}: {}",
                        n.name,
                        n.stats.last_error.clone().unwrap_or_default()
                    )
                })
                .collect();
            bail!("tunnels not up after {limit:?}: {}", down.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One HTTPS GET to a kubelet through the bridge, verifying its certificate.
async fn kubelet_get(
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
async fn echo_bulk(egress: &Path, pod: SocketAddr) -> anyhow::Result<Duration> {
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

async fn echo_server(listener: TcpListener, stop: CancellationToken) {
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

/// The report once every node's probes have passed (or after `limit`).
async fn wait_for_probes(daemon: &Daemon, limit: Duration) -> sshbridge::report::Report {
    let deadline = Instant::now() + limit;
    loop {
        let report = daemon.report();
        let all_up = report
            .nodes
            .iter()
            .all(|n| n.paths.ssh.state == sshbridge::health::PathState::Up);
        if all_up || Instant::now() > deadline {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn render(daemon: &Daemon, nodes: &[SimNode], outcomes: &[Outcome]) -> String {
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
