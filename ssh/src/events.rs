//! What a tunnel does, published as it happens: a hook the daemon hangs
//! its metrics on. This crate counts for its own snapshot
//! ([`crate::TunnelStats`]) and knows nothing of who listens.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sshbridge_config::Node;
use sshbridge_core::tasks::Tasks;
use tokio_util::sync::CancellationToken;

use super::error::HandshakeError;
use super::{Counters, HandshakeFailureKind, HostKeyError, SshContext, Tunnel};

/// Listener of one tunnel's events. Called on the tunnel's own tasks:
/// implementations only count (atomics), never block.
pub trait TunnelEvents: std::fmt::Debug + Send + Sync + 'static {
    /// A session came up (TCP, handshake, host key and authentication).
    fn session_up(&self) {}
    /// An established session was lost (a reconnect follows).
    fn session_lost(&self) {}
    /// A connection attempt failed.
    fn handshake_failed(&self, _kind: HandshakeFailureKind) {}
    /// The node presented a host key other than the one known_hosts lists
    /// for it: at connect time, or on a session whose key a reloaded
    /// known_hosts no longer matches.
    fn host_key_mismatch(&self) {}
    /// A stream's receive queue reached `ssh.max_stream_chunks` and was
    /// compacted.
    fn stream_compacted(&self) {}
    /// A reload changed the credential and the node refused the new one;
    /// it keeps its old session.
    fn rotation_refused(&self) {}
}

impl Tunnel {
    /// [`Tunnel::spawn`], publishing the tunnel's events to `events` from
    /// the first connection attempt on. Each session (`ssh.sessions_per_node`)
    /// runs with its streams on the task set `lane_tasks` gives it, so an
    /// owner can put a node's sessions on different threads.
    pub fn spawn_with_events(
        node: Node,
        ctx: Arc<SshContext>,
        shutdown: CancellationToken,
        lane_tasks: impl FnMut() -> Tasks,
        events: Arc<dyn TunnelEvents>,
    ) -> Tunnel {
        let counters = Counters {
            events: Some(events),
            ..Counters::default()
        };
        Tunnel::spawn_with(node, ctx, shutdown, lane_tasks, counters)
    }
}

impl Counters {
    fn emit(&self, f: impl FnOnce(&dyn TunnelEvents)) {
        if let Some(events) = &self.events {
            f(events.as_ref());
        }
    }

    pub(crate) fn session_up(&self) {
        self.emit(|e| e.session_up());
    }

    pub(crate) fn session_lost(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        self.emit(|e| e.session_lost());
    }

    pub(crate) fn attempt_failed(&self, error: &HandshakeError) {
        let kind = error.kind();
        self.count_failure(kind);
        self.emit(|e| e.handshake_failed(kind));
        if let HandshakeError::HostKey(refused) = error {
            self.host_key_refused(refused);
        }
    }

    /// Publishes a host key refusal that is a mismatch (unknown and
    /// revoked keys are not).
    pub(crate) fn host_key_refused(&self, error: &HostKeyError) {
        if matches!(error, HostKeyError::Mismatch { .. }) {
            self.emit(|e| e.host_key_mismatch());
        }
    }

    pub(crate) fn rotation_refused(&self) {
        self.rotations_refused.fetch_add(1, Ordering::Relaxed);
        self.emit(|e| e.rotation_refused());
    }

    pub(crate) fn compacted(&self) {
        self.stream_compactions.fetch_add(1, Ordering::Relaxed);
        self.emit(|e| e.stream_compacted());
    }
}
