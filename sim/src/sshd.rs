//! An in-process SSH server that plays a node's sshd for `sshbridge demo`
//! and scale benchmarks: public-key authentication and `direct-tcpip`
//! channels, nothing else (no shell, no exec, no remote forwarding).
//!
//! One [`SimSshd`] serves one simulated node. Connections share one
//! `Arc<russh::server::Config>` and hold no buffers of their own beyond what
//! russh needs, so a process can run thousands of them. Correctness tests do
//! not use this server; they run OpenSSH's sshd.

mod handler;
mod relay;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_openssh;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::Config;
use russh::{MethodKind, MethodSet};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use handler::ConnHandler;

/// How long a client may take to send its SSH identification line.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `direct-tcpip` dial may take before the channel is refused.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no traffic at all (not even keepalives) for this long
/// is dropped; the bridge's keepalives keep live sessions well inside it.
const INACTIVITY_TIMEOUT: Duration = Duration::from_secs(600);

/// What a simulated node's sshd serves.
#[derive(Clone)]
pub struct SimSshdConfig {
    /// The host key clients verify (put its public half in their known_hosts).
    pub host_key: PrivateKey,
    /// Public keys allowed to log in, as any user name.
    pub authorized: Vec<PublicKey>,
    /// Targets `direct-tcpip` channels may dial; any other target is refused
    /// with "administratively prohibited". Targets must be IP literals.
    pub allow: Vec<IpNet>,
    /// The node's name, used in logs and in refusal messages.
    pub name: String,
}

/// Counters of one [`SimSshd`], as a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimSshdStats {
    /// TCP connections accepted since start.
    pub connections_accepted: u64,
    /// Connections currently being served.
    pub connections_active: u64,
    /// `direct-tcpip` channels whose target was dialed and that were opened.
    pub channels_opened: u64,
    /// `direct-tcpip` channels refused (not allowed, or the dial failed).
    pub channels_refused: u64,
    /// Bytes relayed from clients to targets.
    pub bytes_to_targets: u64,
    /// Bytes relayed from targets back to clients.
    pub bytes_from_targets: u64,
}

/// Live counters shared by the accept loop, connections and relays.
#[derive(Default)]
struct Counters {
    connections_accepted: AtomicU64,
    connections_active: AtomicU64,
    channels_opened: AtomicU64,
    channels_refused: AtomicU64,
    bytes_to_targets: AtomicU64,
    bytes_from_targets: AtomicU64,
}

/// State every connection of one server shares (one allocation per server).
struct Shared {
    name: String,
    authorized: Vec<PublicKey>,
    allow: Vec<IpNet>,
    counters: Counters,
    /// Cancelled when the server stops; every connection and relay watches it.
    shutdown: CancellationToken,
    /// Tracks connection and relay tasks so [`SimSshd::shutdown`] can wait.
    tasks: TaskTracker,
}

/// Handle to a running simulated sshd. Dropping it, or cancelling the token
/// given to [`SimSshd::start`], stops accepting and closes every connection
/// and relayed stream.
pub struct SimSshd {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping this guard cancels the server's token, which stops the
    /// accept loop, all sessions and all relays.
    _stop: DropGuard,
}

impl SimSshd {
    /// Serves SSH on an already-bound listener until `shutdown` is cancelled
    /// or the handle is dropped.
    ///
    /// Only public-key authentication with one of `config.authorized` keys
    /// succeeds. `direct-tcpip` channels to allowed targets are dialed with a
    /// plain TCP connection and relayed both ways, half-close included.
    /// Keepalive requests from clients are answered by russh itself.
    ///
    /// Must be called inside a Tokio runtime.
    pub fn start(
        listener: TcpListener,
        config: SimSshdConfig,
        shutdown: CancellationToken,
    ) -> SimSshd {
        let local_addr = listener
            .local_addr()
            .expect("a bound TCP listener has a local address");
        let token = shutdown.child_token();
        let shared = Arc::new(Shared {
            name: config.name,
            authorized: config.authorized,
            allow: config.allow,
            counters: Counters::default(),
            shutdown: token.clone(),
            tasks: TaskTracker::new(),
        });
        let russh_config = Arc::new(russh_config(config.host_key));
        let accept = accept_loop(listener, russh_config, shared.clone());
        shared.tasks.spawn(accept);
        SimSshd {
            local_addr,
            shared,
            _stop: token.drop_guard(),
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> SimSshdStats {
        let c = &self.shared.counters;
        SimSshdStats {
            connections_accepted: c.connections_accepted.load(Ordering::Relaxed),
            connections_active: c.connections_active.load(Ordering::Relaxed),
            channels_opened: c.channels_opened.load(Ordering::Relaxed),
            channels_refused: c.channels_refused.load(Ordering::Relaxed),
            bytes_to_targets: c.bytes_to_targets.load(Ordering::Relaxed),
            bytes_from_targets: c.bytes_from_targets.load(Ordering::Relaxed),
        }
    }

    /// Stops the server and waits until its listener, every connection and
    /// every relayed stream are closed.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

/// The russh server configuration shared by all connections of one server.
fn russh_config(host_key: PrivateKey) -> Config {
    Config {
        keys: vec![host_key],
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // A simulation has no secrets to protect with slow rejections, and
        // benchmarks open thousands of sessions.
        auth_rejection_time: Duration::from_millis(50),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(INACTIVITY_TIMEOUT),
        nodelay: true,
        ..Config::default()
    }
}

async fn accept_loop(listener: TcpListener, config: Arc<Config>, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => {
                shared
                    .counters
                    .connections_accepted
                    .fetch_add(1, Ordering::Relaxed);
                let conn = serve_connection(socket, peer, config.clone(), shared.clone());
                shared.tasks.spawn(conn);
            }
            Err(e) => {
                // Usually EMFILE under load: pause instead of spinning.
                tracing::warn!(node = %shared.name, error = %e, "simulated sshd accept failed");
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    config: Arc<Config>,
    shared: Arc<Shared>,
) {
    let counters = &shared.counters;
    counters.connections_active.fetch_add(1, Ordering::Relaxed);
    let _ = socket.set_nodelay(true);
    let handler = ConnHandler::new(shared.clone());
    let start = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        russh::server::run_stream(config, socket, handler),
    );
    let session = tokio::select! {
        _ = shared.shutdown.cancelled() => None,
        started = start => match started {
            Ok(Ok(session)) => Some(session),
            Ok(Err(e)) => {
                tracing::debug!(node = %shared.name, %peer, error = %e, "ssh handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(node = %shared.name, %peer, "ssh handshake timed out");
                None
            }
        },
    };
    if let Some(session) = session {
        let handle = session.handle();
        tokio::pin!(session);
        tokio::select! {
            ended = &mut session => {
                if let Err(e) = ended {
                    tracing::debug!(node = %shared.name, %peer, error = %e, "ssh session ended");
                }
            }
            _ = shared.shutdown.cancelled() => {
                // Tell the client why, then give the session a moment to
                // flush it; the socket closes when `session` drops.
                let reason = format!("simulated node {} is shutting down", shared.name);
                let bye = async {
                    let _ = handle
                        .disconnect(russh::Disconnect::ByApplication, reason, "en".into())
                        .await;
                    let _ = (&mut session).await;
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
            }
        }
    }
    counters.connections_active.fetch_sub(1, Ordering::Relaxed);
}
