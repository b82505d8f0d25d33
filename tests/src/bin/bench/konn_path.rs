//! The Konnectivity rows: bulk data and dials through the bridge's agent
//! server and a real `sshbridge agent` process, next to `ssh -N -L` through
//! an OpenSSH sshd to the same sink, back to back.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sshbridge_config::Route;
use sshbridge_sim::{keys, pki::Pki};
use sshbridge_tests::{hostkeys, net, KonnectivityConfig, MigrationTuning, NodeEntry};
use tokio_util::sync::CancellationToken;

use crate::daemon::{metric_sum, Daemon};
use crate::interactive;
use crate::load::{self, median, Sink, Via};
use crate::openssh::{Forward, Sshd};
use crate::report::{Goal, On, Row};
use crate::ssh_path::{bridge_config, dial_rows};
use crate::upstream_konn;
use crate::Mode;

/// The node whose route is `konnectivity`.
const NODE: &str = "bench-konn";
/// The baseline's cipher: OpenSSH's first choice by default.
const CIPHER: &str = "chacha20-poly1305@openssh.com";
/// Bytes an echo client keeps sent but not yet echoed.
const INFLIGHT: u64 = 1024 * 1024;
/// Bound on the agent's stream coming up.
const READY: Duration = Duration::from_secs(30);

/// `sshbridge agent` as a child process. Dropping it kills it.
struct AgentProc {
    child: tokio::process::Child,
    log: PathBuf,
}

impl AgentProc {
    fn start(bin: &Path, k: &KonnectivityConfig, ip: IpAddr, dir: &Path) -> anyhow::Result<Self> {
        let log = dir.join("agent.log");
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let (cert, key) = &k.agent_identity;
        let filter = std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into());
        let child = tokio::process::Command::new(bin)
            .arg("agent")
            .args(["--server", &k.agent_listen.to_string()])
            .arg("--ca-cert")
            .arg(&k.agent_ca)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(["--agent-id", "bench-agent"])
            .args(["--identifiers", &format!("host={NODE}&ipv4={ip}")])
            // The bridge may still be binding its agent port: retry fast.
            .args(["--sync-interval", "100ms", "--sync-interval-cap", "500ms"])
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} agent", bin.display()))?;
        Ok(AgentProc { child, log })
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(20)..].join("\n")
    }
}

/// The bridge's agent server for `node` on a free 127.0.0.1 port; agents
/// need a client certificate from `pki`.
fn konnectivity_config(pki: &Pki, dir: &Path) -> anyhow::Result<KonnectivityConfig> {
    let ip: IpAddr = [127, 0, 0, 1].into();
    std::fs::create_dir_all(dir)?;
    let server = pki.issue_server(&[ip], &["sshbridge-konnectivity"])?;
    let (cert, key) = server.write_to(dir, "konnectivity")?;
    // The node's own certificate: the bridge proves agent identity.
    let client = pki.issue_node_client(NODE)?;
    let agent_identity = client.write_to(dir, "agent")?;
    let ca = pki.write_ca(dir)?;
    Ok(KonnectivityConfig {
        agent_listen: SocketAddr::new(ip, net::free_port(ip)?),
        cert,
        key,
        client_ca: Some(ca.clone()),
        grpc_uds: None,
        routes: [(NODE.to_string(), Route::Konnectivity)].into(),
        migration: MigrationTuning::default(),
        agent_ca: ca,
        agent_identity: agent_identity.clone(),
        agent_identities: [(NODE.to_string(), agent_identity)].into(),
        identity: None,
        agent_tls: pki.client_config(Some(&client))?,
        extra: String::new(),
    })
}

/// Polls `/metrics` until the node's agent stream is up
/// (`sshbridge_tunnel_up{path="konnectivity"} 1`); fails with both logs.
async fn wait_agent(bridge: &mut Daemon, agent: &mut AgentProc) -> anyhow::Result<Duration> {
    let series = format!("sshbridge_tunnel_up{{node=\"{NODE}\",path=\"konnectivity\"}}");
    let t0 = Instant::now();
    while t0.elapsed() < READY {
        bridge.check_running()?;
        if let Ok(Some(exit)) = agent.child.try_wait() {
            bail!("sshbridge agent exited with {exit}:\n{}", agent.log_tail());
        }
        if let Ok(text) = bridge.metrics().await {
            if metric_sum(&text, &series) >= 1.0 {
                return Ok(t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the agent was not connected after {READY:?}\nagent log:\n{}\nbridge log:\n{}",
        agent.log_tail(),
        bridge.log_tail(20)
    )
}

/// Runs the Konnectivity rows.
pub async fn run(bin: &Path, dir: &Path, mode: Mode) -> anyhow::Result<Vec<Row>> {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    std::fs::create_dir_all(dir)?;
    let client = keys::generate_ed25519();
    let identity = dir.join("id_ed25519");
    keys::write_private_key(&identity, &client)?;
    let authorized = keys::authorized_keys_line(client.public_key());

    // One node: its sshd (the baseline's, and the node's idle SSH path) and
    // the sink both listen on the node's address.
    let ip = net::host(net::block(), 1);
    let sshd = Sshd::start(ip, &dir.join("sshd"), CIPHER, &authorized).await?;
    let kh = dir.join("known_hosts");
    std::fs::write(
        &kh,
        format!("{} {}\n", hostkeys::host_pattern(sshd.addr), sshd.host_key),
    )?;
    let sink = Sink::start(ip, stop.clone()).await?;
    let pki = Pki::new("sshbridge bench konnectivity CA")?;
    let entry = NodeEntry {
        name: NODE.into(),
        address: ip,
        ssh_address: sshd.addr,
        pod_cidrs: Vec::new(),
    };

    // The agent port was free a moment ago; retry if someone took it.
    let mut attempt = 0;
    let (bridge, agent, ready) = loop {
        attempt += 1;
        let bdir = dir.join(format!("bridge-{attempt}"));
        let config = bridge_config(
            &bdir,
            identity.clone(),
            kh.clone(),
            10250,
            vec![entry.clone()],
        )?;
        let k = konnectivity_config(&pki, &bdir)?;
        // Stream errors are logged at info; the bulk row quotes them.
        let filter = std::env::var("BENCH_RUST_LOG")
            .unwrap_or_else(|_| "warn,sshbridge::egress=info".into());
        let env = [("RUST_LOG", filter.as_str())];
        let mut bridge = Daemon::start_with(bin, config, Some(&k), &env).await?;
        let mut agent = AgentProc::start(bin, &k, ip, &bdir)?;
        match wait_agent(&mut bridge, &mut agent).await {
            Ok(t) => break (bridge, agent, t),
            Err(e) if attempt >= 3 => return Err(e),
            Err(e) => eprintln!("bench: konnectivity attempt {attempt} failed, retrying: {e:#}"),
        }
    };
    let user = sshbridge_tests::cluster::current_user()?;
    let forward = Forward::start(&sshd, &identity, &kh, &user, sink.addr).await?;

    let (warmup, window, rounds) = match mode {
        Mode::Quick => (Duration::from_millis(300), Duration::from_millis(1500), 1),
        Mode::Full => (Duration::from_millis(500), Duration::from_secs(4), 3),
    };
    let via_ssh = Via::Tcp(forward.local);
    let via_konn = Via::Bridge {
        uds: bridge.egress().to_path_buf(),
        target: sink.addr.to_string(),
    };
    let mut rows = Vec::new();

    // Bulk upload exactly as the SSH rows do it. Konnectivity has no flow
    // control, so this can end with the agent closing the stream.
    let mut s = Vec::new();
    let mut k = Vec::new();
    let mut broke = None;
    for _ in 0..rounds {
        s.push(load::throughput(&via_ssh, &sink, 1, warmup, window).await?);
        match load::throughput(&via_konn, &sink, 1, warmup, window).await {
            Ok(x) => k.push(x),
            Err(e) => {
                broke = Some(format!("{e:#}"));
                break;
            }
        }
    }
    let name = "1 stream, bulk upload (as ssh rows)";
    let row = match broke {
        None => Row::new("throughput konn", name, "MiB/s", median(k)),
        Some(e) => {
            // The bridge logs the reason once it has closed its side.
            let mut line = None;
            for _ in 0..20 {
                line = bridge.log_lines("stopped reading");
                if line.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let why = line
                .and_then(|l| l.split("error=").nth(1).map(String::from))
                .unwrap_or_else(|| format!("{e} (the bridge log does not say why)"));
            // CI must not pass with a broken stream; a full run records it.
            if mode == Mode::Quick {
                bail!("the Konnectivity bulk upload stream broke: {why}");
            }
            Row::missing("throughput konn", name, "MiB/s", "").note(&format!(
                "the stream broke: {why}. Konnectivity has no flow control; the agent \
                 closes a connection whose target is 4 MiB behind, even one that reads"
            ))
        }
    };
    rows.push(
        row.vs("ssh -N -L", median(s))
            .target(Goal::AtLeast, On::Ratio, 1.0),
    );

    // The same path with the client keeping at most 1 MiB in flight
    // (sent, not yet echoed), so neither side's 4 MiB limit is reached.
    let echo = load::echo_server(ip, stop.clone()).await?;
    let echo_fwd = Forward::start(&sshd, &identity, &kh, &user, echo).await?;
    let via_ssh = Via::Tcp(echo_fwd.local);
    let via_echo = Via::Bridge {
        uds: bridge.egress().to_path_buf(),
        target: echo.to_string(),
    };
    for streams in [1, 8, 64] {
        let (mut k, mut s) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            s.push(load::echo_throughput(&via_ssh, streams, INFLIGHT, warmup, window).await?);
            let through = load::echo_throughput(&via_echo, streams, INFLIGHT, warmup, window).await;
            k.push(through.with_context(|| {
                format!(
                    "{streams} echo stream(s) over Konnectivity\nagent log:\n{}\nbridge log:\n{}",
                    agent.log_tail(),
                    bridge.log_tail(20)
                )
            })?);
        }
        let name = format!("{streams} stream(s), echo 1 MiB in flight");
        let mut row =
            Row::new("throughput konn", &name, "MiB/s", median(k)).vs("ssh -N -L", median(s));
        if streams == 1 {
            row = row.target(Goal::AtLeast, On::Ratio, 1.0).note(&format!(
                "payload echoed back per s; CONNECT -> bridge -> gRPC/TLS agent stream -> \
                 sshbridge agent -> echo; baseline ssh -L with {CIPHER}; agent connected \
                 {:.0} ms after the bridge started",
                ready.as_secs_f64() * 1000.0
            ));
        }
        rows.push(row);
    }
    rows.extend(dial_rows("dial konn", &via_konn, mode).await?);

    let two = interactive::two_write_server(ip, stop.clone()).await?;
    let two_fwd = Forward::start(&sshd, &identity, &kh, &user, two).await?;
    rows.extend(
        interactive::measure(
            "interactive konn",
            two,
            two_fwd.local,
            bridge.egress(),
            mode,
        )
        .await?,
    );
    // Upstream's server and agent against the same sink and echo server.
    match upstream_konn::anp() {
        None => rows.push(upstream_konn::skipped()),
        Some(anp) => {
            let ours = upstream_konn::Ours {
                ip,
                sink: &sink,
                echo,
                egress: bridge.egress(),
                pids: [
                    bridge.pid() as u32,
                    agent.child.id().context("the agent exited")?,
                ],
            };
            eprintln!("bench: Konnectivity path, ours vs upstream (ANP_BIN) ...");
            let found = upstream_konn::run(&anp, ours, &dir.join("upstream"), mode).await;
            rows.extend(found.context("our Konnectivity path vs upstream's")?);
        }
    }
    bridge.stop().await;
    Ok(rows)
}
