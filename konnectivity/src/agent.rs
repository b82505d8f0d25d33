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
//! Several servers behind one address (bridges of a highly available
//! control plane behind a load balancer): the agent dials again until it
//! holds one stream to each distinct `serverID`, `serverCount` of them, as
//! upstream's agent does ([`servers`] has the rules, [`sync`] the loop).
//! Each stream serves only the dials of its own server.
//!
//! Not here: the server side (`crate`).

mod allow;
mod config;
mod conn;
mod servers;
mod session;
mod state;
mod stats;
mod sync;
mod transport;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use allow::{AllowList, AllowParseError, AllowRule};
pub use config::{AgentConfig, AgentError};
pub use stats::AgentStats;

pub use servers::{SYNC_FACTOR, SYNC_JITTER};
use stats::{bump, Counters};

/// What the sessions of one agent share.
struct Shared {
    cfg: AgentConfig,
    counters: Counters,
    /// Cancelled by [`AgentHandle::drain`]: send DRAIN, exit when idle.
    drain: CancellationToken,
    /// Cancelled by the shutdown token or by dropping the handle: stop at once.
    stop: CancellationToken,
}

/// The servers an agent holds a stream to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Servers {
    /// The `serverID`s held, sorted.
    pub ids: Vec<String>,
    /// How many it should hold (the last `serverCount` received);
    /// `None` before a server answered.
    pub wanted: Option<usize>,
}

/// A running agent; see [`Agent::spawn`].
pub struct Agent {
    shared: Arc<Shared>,
    watches: sync::Watches,
}

/// Controls a running agent. Dropping it stops the agent at once.
pub struct AgentHandle {
    shared: Arc<Shared>,
    servers: watch::Receiver<Servers>,
    connected: watch::Receiver<bool>,
    /// The agent's task; `None` once [`AgentHandle::wait`] saw it end.
    task: Option<JoinHandle<()>>,
}

impl Agent {
    /// Starts an agent on the current tokio runtime. It connects to every
    /// server behind its address, serves, reconnects, and ends when `shutdown` is cancelled (at
    /// once), or after [`AgentHandle::drain`] once its connections are done.
    pub fn spawn(config: AgentConfig, shutdown: CancellationToken) -> AgentHandle {
        let (servers, servers_rx) = watch::channel(Servers::default());
        let (connected, connected_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            cfg: config,
            counters: Counters::default(),
            drain: CancellationToken::new(),
            stop: shutdown.child_token(),
        });
        let agent = Agent {
            shared: shared.clone(),
            watches: sync::Watches { servers, connected },
        };
        let task = tokio::spawn(agent.run());
        AgentHandle {
            shared,
            servers: servers_rx,
            connected: connected_rx,
            task: Some(task),
        }
    }

    async fn run(self) {
        sync::run(self.shared, self.watches).await;
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

    /// Whether a stream to at least one server is up now; changes as it
    /// connects and reconnects.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// The servers held now and how many are wanted; changes as streams
    /// come and go.
    pub fn servers(&self) -> watch::Receiver<Servers> {
        self.servers.clone()
    }

    /// A snapshot of the agent's counters.
    pub fn stats(&self) -> AgentStats {
        self.shared.counters.snapshot()
    }

    /// A reader of [`AgentHandle::stats`] that lives apart from the handle
    /// (for a metrics endpoint).
    pub fn stats_reader(&self) -> Arc<dyn Fn() -> AgentStats + Send + Sync> {
        let shared = self.shared.clone();
        Arc::new(move || shared.counters.snapshot())
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
            .field("servers", &*self.servers.borrow())
            .finish_non_exhaustive()
    }
}
