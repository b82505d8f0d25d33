//! `sshbridge agent`: a Konnectivity agent. The first SIGTERM/SIGINT sends
//! DRAIN and exits once open connections are done; the second exits at once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sshbridge::agent::{Agent, AgentConfig, AllowList, AllowRule};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{humantime_duration, init_logging, LogFormat};

/// Flags of `sshbridge agent`, named like upstream's proxy-agent where they
/// mean the same.
#[derive(Debug, Args)]
pub(super) struct AgentArgs {
    /// The Konnectivity server's agent port.
    #[arg(long, value_name = "HOST:PORT")]
    server: String,
    /// CA bundle that verifies the server's certificate.
    #[arg(long, value_name = "FILE")]
    ca_cert: PathBuf,
    /// Client certificate, for servers that require mTLS.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Name the server's certificate must carry (default: the host of --server).
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// The agent's ID (default: this machine's host name).
    #[arg(long, value_name = "ID")]
    agent_id: Option<String>,
    /// What this agent serves, URL-query form: host=, ipv4=, ipv6=, cidr=,
    /// default-route=true (e.g. "host=node-a&ipv4=10.0.0.5&cidr=10.244.1.0/24").
    #[arg(long, value_name = "QUERY", default_value = "", value_parser = identifiers)]
    identifiers: String,
    /// Only dial targets inside CIDR on PORTS (repeatable), e.g.
    /// 10.0.0.0/8:10250,443 or 10.244.0.0/16:1-65535 or 10.0.0.5/32:*.
    /// Without it, the agent dials whatever the server asks.
    #[arg(long, value_name = "CIDR:PORTS")]
    allow: Vec<AllowRule>,
    /// How often the agent checks that it holds a stream to every server
    /// behind --server (serverCount distinct serverIDs) and dials for a
    /// missing one; after a failed dial the delay grows by 1.5 up to
    /// --sync-interval-cap.
    #[arg(long, value_parser = humantime_duration, default_value = "1s")]
    sync_interval: Duration,
    /// Longest delay between connect attempts.
    #[arg(long, value_parser = humantime_duration, default_value = "10s")]
    sync_interval_cap: Duration,
    /// Keep dialing even when every server is held, so that a serverCount
    /// that grew is found (each extra stream is a duplicate, closed at once).
    #[arg(long)]
    sync_forever: bool,
    /// Serve the agent's Prometheus metrics on http://ADDR/metrics (servers
    /// held out of wanted, dials); off by default.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Time limit of one dial to a target.
    #[arg(long, value_parser = humantime_duration, default_value = "5s")]
    dial_timeout: Duration,
    /// Bytes that may wait towards one target before its connection is
    /// closed as not reading.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    write_buffer: usize,
    /// File with a bearer token sent as `authorization: Bearer TOKEN`, read
    /// again at each connect (a projected service account token rotates);
    /// for servers with agent_auth = "tokenreview". Upstream's name for it
    /// is --service-account-token-path.
    #[arg(
        long,
        value_name = "FILE",
        visible_alias = "service-account-token-path"
    )]
    token_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

/// Checks the keys of `--identifiers`; the values go to the server as given.
fn identifiers(s: &str) -> Result<String, String> {
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !matches!(key, "host" | "ipv4" | "ipv6" | "cidr" | "default-route") {
            return Err(format!(
                "unknown identifier {key:?} (known: host, ipv4, ipv6, cidr, default-route)"
            ));
        }
        if value.is_empty() {
            return Err(format!("identifier {key:?} has no value"));
        }
    }
    Ok(s.to_string())
}

/// This machine's host name, or "sshbridge-agent".
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "sshbridge-agent".to_string())
}

pub(super) async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    let identity = args.cert.as_deref().zip(args.key.as_deref());
    let tls = AgentConfig::client_tls(&args.ca_cert, identity)?;
    let agent_id = args.agent_id.unwrap_or_else(host_name);
    let mut cfg = AgentConfig::new(args.server, tls, agent_id)?;
    if let Some(name) = args.server_name {
        cfg.server_name = rustls::pki_types::ServerName::try_from(name.clone())
            .with_context(|| format!("--server-name {name:?} is neither a DNS name nor an IP"))?;
    }
    cfg.identifiers = args.identifiers;
    cfg.allow = AllowList::new(args.allow);
    cfg.token_file = args.token_file;
    cfg.dial_timeout = args.dial_timeout;
    cfg.write_buffer = args.write_buffer;
    cfg.backoff = sshbridge_config::Backoff {
        initial: args.sync_interval,
        max: args.sync_interval_cap.max(args.sync_interval),
        multiplier: sshbridge::agent::SYNC_FACTOR,
        jitter: sshbridge::agent::SYNC_JITTER,
    };
    cfg.sync_forever = args.sync_forever;
    let metrics = match args.metrics_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("--metrics-listen {addr}: cannot listen; is the port free?")
        })?),
        None => None,
    };
    info!(
        server = %cfg.server, agent_id = %cfg.agent_id, identifiers = %cfg.identifiers,
        allow_list = cfg.allow.is_restricted(), version = env!("CARGO_PKG_VERSION"),
        "sshbridge agent starting"
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut handle = Agent::spawn(cfg, CancellationToken::new());
    let stop_metrics = CancellationToken::new();
    if let Some(listener) = metrics {
        let stats = handle.stats_reader();
        info!(listen = %listener.local_addr()?, "serving the agent's /metrics");
        tokio::spawn(super::agent_metrics::serve(
            listener,
            stats,
            stop_metrics.clone(),
        ));
    }
    let mut signals = 0;
    loop {
        tokio::select! {
            _ = handle.wait() => break,
            _ = term.recv() => signals += 1,
            _ = int.recv() => signals += 1,
        }
        if signals == 1 {
            info!(
                "signal: sending DRAIN, exiting once open connections are done (again to exit now)"
            );
            handle.drain();
        } else {
            info!("second signal: exiting now");
            handle.stop();
        }
    }
    stop_metrics.cancel();
    info!("sshbridge agent stopped");
    Ok(ExitCode::SUCCESS)
}
