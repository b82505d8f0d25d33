//! A Konnectivity agent (`sshbridge agent`): dials a Konnectivity server
//! (upstream's proxy-server or the bridge's agent server) over TLS, keeps
//! one `AgentService.Connect` stream open and serves the dials the server
//! sends down it.
//!
//! Upstream behaviours it follows where the wire facts leave a choice:
//! - connectIDs are per stream, start at 1 and grow by one for every
//!   DIAL_REQ received (a failed dial uses one up and answers connectID 0);
//! - targets are read in chunks of up to 32 KiB, one DATA packet each;
//! - a target that closes (EOF or error) is answered with CLOSE_RSP, a
//!   CLOSE_REQ closes the target and is answered with CLOSE_RSP; a CLOSE_REQ
//!   for an unknown connection gets CLOSE_RSP "Unknown connectID", DATA for
//!   one gets CLOSE_RSP "unrecognized connectID";
//! - dials time out after 5 s by default; DRAIN is sent once per stream.
//!
//! Bytes towards each target wait in that connection's own queue of
//! [`AgentConfig::write_buffer`] bytes. The protocol has no flow control,
//! so when a queue is full the agent stops reading the stream, as upstream
//! does, and the server's sender slows to the target's pace: a large
//! upload to a slower target arrives whole. Where it differs on purpose: a
//! target that takes no bytes at all for [`AgentConfig::stall_timeout`]
//! has its connection closed, with CLOSE_RSP carrying the error, so a
//! stuck target holds the stream's other connections back for at most
//! that long. (Upstream waits without a limit.)
//! DIAL_CLS from the server cancels a dial still in progress, silently.
//!
//! With a server that announces the sshbridge extensions
//! (docs/konnectivity.md): `credit` replaces the waiting above by a window
//! per connection (the stream is never held back), and `half-close` turns
//! a target's EOF into HALF_CLOSE and the server's HALF_CLOSE into
//! `shutdown(SHUT_WR)` on the target.
//!
//! Not here: the server side (`crate`) and the several-servers
//! logic of upstream (`serverCount` is logged, one server is dialed).

mod allow;
mod conn;
mod session;
mod stats;
mod transport;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use allow::{AllowList, AllowParseError, AllowRule};
pub use stats::AgentStats;

use sshbridge_core::backoff::Backoff;
use stats::{bump, Counters};

/// Everything an agent needs; build with [`AgentConfig::new`] and adjust
/// the public fields.
#[derive(Clone)]
pub struct AgentConfig {
    /// The server's `HOST:PORT`.
    pub server: String,
    /// The name the server's certificate must carry (DNS name or IP SAN).
    pub server_name: ServerName<'static>,
    /// TLS client config (roots, optional client certificate). The agent
    /// adds ALPN `h2`, which gRPC servers require.
    pub tls: Arc<rustls::ClientConfig>,
    /// `agentID` metadata.
    pub agent_id: String,
    /// `agentIdentifiers` metadata, URL-query form (`host=..&ipv4=..`).
    pub identifiers: String,
    /// What the agent may dial; empty allows everything.
    pub allow: AllowList,
    /// A file holding a bearer token, read at every connect (tokens rotate).
    pub token_file: Option<PathBuf>,
    /// Time limit of one dial to a target (upstream: 5 s).
    pub dial_timeout: Duration,
    /// Time limit of TCP + TLS + the stream's response headers.
    pub connect_timeout: Duration,
    /// HTTP/2 ping interval; the stream is dropped when a ping is not
    /// answered within the same time.
    pub keepalive: Duration,
    /// Delays between connect attempts.
    pub backoff: sshbridge_config::Backoff,
    /// Bytes that may wait towards one target; past it the agent stops
    /// reading the stream until the target takes some.
    pub write_buffer: usize,
    /// How long a CLOSE_REQ may wait for queued bytes to reach the target.
    pub close_grace: Duration,
    /// How long a target with a full queue may take no bytes before its
    /// connection is closed (meanwhile the stream waits for it).
    /// Compatibility mode only.
    pub stall_timeout: Duration,
    /// Extensions offered to the server (docs/konnectivity.md); used only
    /// when the server announces them too.
    pub extensions: crate::Extensions,
    /// Receive window per connection with the `credit` extension.
    pub credit_window: usize,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("server", &self.server)
            .field("server_name", &self.server_name)
            .field("agent_id", &self.agent_id)
            .field("identifiers", &self.identifiers)
            .field("allow", &self.allow)
            .field("token_file", &self.token_file)
            .field("dial_timeout", &self.dial_timeout)
            .finish_non_exhaustive()
    }
}

/// Why an agent could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// `--server` is not `HOST:PORT`.
    #[error(
        "--server {server:?}: {what} (expected HOST:PORT, e.g. 10.0.0.1:8132 or [fd00::1]:8132)"
    )]
    ServerAddress {
        /// The value given.
        server: String,
        /// What is wrong.
        what: String,
    },
    /// A certificate, key or CA file is unusable.
    #[error(transparent)]
    Tls(#[from] sshbridge_core::tls::TlsError),
    /// rustls refused the client certificate and key.
    #[error("client certificate {cert}: {source}; check that the key belongs to the certificate")]
    ClientCert {
        /// The certificate file.
        cert: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

impl AgentConfig {
    /// A config with upstream's defaults: dial timeout 5 s, reconnects from
    /// 1 s up to 10 s, 4 MiB per-connection write queue. The server name is
    /// the host part of `server`.
    pub fn new(
        server: impl Into<String>,
        tls: Arc<rustls::ClientConfig>,
        agent_id: impl Into<String>,
    ) -> Result<AgentConfig, AgentError> {
        let server = server.into();
        let host = server_host(&server)?;
        let server_name =
            ServerName::try_from(host.clone()).map_err(|e| AgentError::ServerAddress {
                server: server.clone(),
                what: format!("{host:?} is neither a DNS name nor an IP address: {e}"),
            })?;
        Ok(AgentConfig {
            server,
            server_name,
            tls,
            agent_id: agent_id.into(),
            identifiers: String::new(),
            allow: AllowList::default(),
            token_file: None,
            dial_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(30),
            backoff: sshbridge_config::Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(10),
                multiplier: 2.0,
                jitter: 0.2,
            },
            write_buffer: 4 << 20,
            stall_timeout: Duration::from_secs(30),
            close_grace: Duration::from_secs(5),
            extensions: crate::Extensions::ALL,
            credit_window: crate::flow::DEFAULT_CREDIT_WINDOW,
        })
    }

    /// A TLS client config trusting `ca` and presenting `identity`
    /// (certificate, key) when given; ring provider.
    pub fn client_tls(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Arc<rustls::ClientConfig>, AgentError> {
        let builder = rustls::ClientConfig::builder_with_provider(sshbridge_core::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| AgentError::ClientCert {
                cert: ca.into(),
                source,
            })?
            .with_root_certificates(sshbridge_core::tls::load_roots(ca)?);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    sshbridge_core::tls::load_certs(cert)?,
                    sshbridge_core::tls::load_key(key)?,
                )
                .map_err(|source| AgentError::ClientCert {
                    cert: cert.into(),
                    source,
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// The host of `HOST:PORT` (brackets of an IPv6 literal removed).
fn server_host(server: &str) -> Result<String, AgentError> {
    let err = |what: &str| AgentError::ServerAddress {
        server: server.to_string(),
        what: what.to_string(),
    };
    let (host, port) = server.rsplit_once(':').ok_or_else(|| err("no port"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| err("bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(err("no host"));
    }
    Ok(host.to_string())
}

/// What the sessions of one agent share.
struct Shared {
    cfg: AgentConfig,
    counters: Counters,
    /// Cancelled by [`AgentHandle::drain`]: send DRAIN, exit when idle.
    drain: CancellationToken,
    /// Cancelled by the shutdown token or by dropping the handle: stop at once.
    stop: CancellationToken,
}

/// A running agent; see [`Agent::spawn`].
pub struct Agent {
    shared: Arc<Shared>,
    connected: watch::Sender<bool>,
}

/// Controls a running agent. Dropping it stops the agent at once.
pub struct AgentHandle {
    shared: Arc<Shared>,
    connected: watch::Receiver<bool>,
    /// The agent's task; `None` once [`AgentHandle::wait`] saw it end.
    task: Option<JoinHandle<()>>,
}

impl Agent {
    /// Starts an agent on the current tokio runtime. It connects, serves,
    /// reconnects with backoff, and ends when `shutdown` is cancelled (at
    /// once), or after [`AgentHandle::drain`] once its connections are done.
    pub fn spawn(config: AgentConfig, shutdown: CancellationToken) -> AgentHandle {
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            cfg: config,
            counters: Counters::default(),
            drain: CancellationToken::new(),
            stop: shutdown.child_token(),
        });
        let agent = Agent {
            shared: shared.clone(),
            connected: tx,
        };
        let task = tokio::spawn(agent.run());
        AgentHandle {
            shared,
            connected: rx,
            task: Some(task),
        }
    }

    async fn run(self) {
        let shared = &self.shared;
        let cfg = &shared.cfg;
        let mut backoff = Backoff::new(&cfg.backoff);
        loop {
            let attempt = tokio::select! {
                r = transport::connect(cfg) => r,
                _ = shared.stop.cancelled() => break,
            };
            match attempt {
                Ok(link) => {
                    bump(&shared.counters.connects, 1);
                    tracing::info!(
                        server = %cfg.server, server_id = %link.server_id,
                        server_count = %link.server_count, agent_id = %cfg.agent_id,
                        extensions = %link.ext.header(), flow_control = link.ext.mode(),
                        "connected to the Konnectivity server"
                    );
                    self.connected.send_replace(true);
                    let up = tokio::time::Instant::now();
                    let end = session::serve(link, shared).await;
                    self.connected.send_replace(false);
                    match end {
                        session::End::Drained => {
                            tracing::info!(server = %cfg.server, "drained: no connection left, exiting");
                            break;
                        }
                        session::End::Stopped => break,
                        session::End::Lost(why) => tracing::warn!(
                            server = %cfg.server,
                            "stream to the Konnectivity server ended: {why}; reconnecting"
                        ),
                    }
                    backoff.reset_if_stable(up.elapsed());
                }
                Err(e) => {
                    bump(&shared.counters.connect_failures, 1);
                    tracing::warn!(server = %cfg.server, attempt = backoff.attempts() + 1, "{e}");
                }
            }
            // A lost stream took its connections with it; a draining agent
            // has nothing left to wait for.
            if shared.drain.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = backoff.wait() => {}
                _ = shared.stop.cancelled() => break,
                _ = shared.drain.cancelled() => break,
            }
        }
        self.connected.send_replace(false);
    }
}

impl AgentHandle {
    /// Sends DRAIN to the server (it then prefers other agents) and lets
    /// the agent exit once its open connections are done.
    pub fn drain(&self) {
        self.shared.drain.cancel();
    }

    /// Stops the agent at once, cutting open connections.
    pub fn stop(&self) {
        self.shared.stop.cancel();
    }

    /// Whether a stream to the server is up now; changes as it connects
    /// and reconnects.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// A snapshot of the agent's counters.
    pub fn stats(&self) -> AgentStats {
        self.shared.counters.snapshot()
    }

    /// Whether the agent has exited.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits until the agent has exited (after a drain, a stop or the
    /// shutdown token).
    /// Cancel-safe: dropping this future leaves the agent running.
    pub async fn wait(&mut self) {
        if let Some(task) = &mut self.task {
            let result = task.await;
            self.task = None;
            if let Err(e) = result {
                tracing::error!("agent task failed: {e}");
            }
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle")
            .field("server", &self.shared.cfg.server)
            .field("connected", &*self.connected.borrow())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_host_takes_names_ips_and_bracketed_ipv6() {
        assert_eq!(server_host("proxy.example:8132").unwrap(), "proxy.example");
        assert_eq!(server_host("10.0.0.1:8132").unwrap(), "10.0.0.1");
        assert_eq!(server_host("[fd00::1]:8132").unwrap(), "fd00::1");
        for bad in ["10.0.0.1", "10.0.0.1:0", ":8132", "h:port"] {
            let e = server_host(bad).unwrap_err().to_string();
            assert!(e.contains("expected HOST:PORT"), "{bad}: {e}");
        }
    }
}
