//! State shared by a node's session actor, its handles and its streams.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use russh::client::Handle;
use russh::keys::PublicKeyOrCertificate;
use sshbridge_config::Node;
use sshbridge_core::lock;
use sshbridge_core::path::DialError;
use sshbridge_core::tasks::Tasks;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::error::HandshakeError;
use super::{Counters, HostIdentity, SshContext, TunnelState};

/// State shared by the actor, the handles and the streams of one node.
pub(crate) struct Shared {
    pub(crate) node: Node,
    /// `ssh_address` as text, for messages.
    pub(crate) addr: String,
    pub(crate) ctx: Mutex<Arc<SshContext>>,
    pub(crate) state: watch::Sender<TunnelState>,
    pub(crate) session: Mutex<Option<Arc<Handle<Client>>>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) last_error: Mutex<Option<String>>,
    pub(crate) up_since: Mutex<Option<SystemTime>>,
    pub(crate) draining: AtomicBool,
    /// `true` while parked: no session, no reconnects, dials refused.
    pub(crate) parked: watch::Sender<bool>,
    /// Open streams (plus dials in progress); drain waits for zero.
    pub(crate) open: watch::Sender<usize>,
    /// The actor's stop token; cancelling it closes the session.
    pub(crate) stop: CancellationToken,
    /// The host key the current session was accepted with.
    pub(crate) host_key: Mutex<Option<PublicKeyOrCertificate>>,
    /// Set (with why) when a new known_hosts no longer trusts that key;
    /// the actor then closes the session and reconnects.
    pub(crate) distrusted: watch::Sender<Option<String>>,
    /// Where the stream pumps run (the tunnel owner's tracker).
    pub(crate) tasks: Tasks,
}

impl Shared {
    pub(crate) fn context(&self) -> Arc<SshContext> {
        lock(&self.ctx).clone()
    }

    pub(crate) fn identity(&self) -> HostIdentity {
        HostIdentity {
            node: self.node.name.clone(),
            address: self.node.address.to_string(),
            ssh: self.node.ssh_address.clone(),
        }
    }

    /// Publish a state; while draining only `Stopped` replaces `Draining`.
    pub(crate) fn set_state(&self, s: TunnelState) {
        self.state.send_if_modified(|cur| {
            let locked = *cur == TunnelState::Stopped
                || (*cur == TunnelState::Draining && s != TunnelState::Stopped);
            let change = !locked && *cur != s;
            if change {
                *cur = s;
            }
            change
        });
    }

    pub(crate) fn session_up(
        &self,
        handle: Arc<Handle<Client>>,
        host_key: Option<PublicKeyOrCertificate>,
    ) {
        *lock(&self.host_key) = host_key;
        self.distrusted.send_replace(None);
        // A reload may have swapped known_hosts during the handshake.
        self.recheck_host_key(&self.context());
        *lock(&self.session) = Some(handle);
        *lock(&self.up_since) = Some(SystemTime::now());
        self.counters.session_up();
        self.set_state(TunnelState::Up);
    }

    /// Resolves (with why) once the current session's host key is no
    /// longer trusted by the context's known_hosts.
    pub(crate) async fn host_key_distrusted(&self) -> String {
        let mut rx = self.distrusted.subscribe();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone(),
            Err(_) => None,
        };
        match why {
            Some(why) => why,
            None => std::future::pending().await,
        }
    }

    /// Checks the current session's host key against `ctx`'s known_hosts
    /// (after a reload); a key it no longer trusts ends the session.
    pub(crate) fn recheck_host_key(&self, ctx: &SshContext) {
        let key = lock(&self.host_key);
        let Some(key) = key.as_ref() else { return };
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Err(e) = ctx.known_hosts().verify(&self.identity(), key, now) {
            self.counters.host_key_refused(&e);
            self.distrusted.send_replace(Some(e.to_string()));
        }
    }

    pub(crate) fn session_down(&self) {
        lock(&self.host_key).take();
        lock(&self.session).take();
        lock(&self.up_since).take();
    }

    pub(crate) fn session_lost(&self, msg: String) {
        self.counters.session_lost();
        *lock(&self.last_error) = Some(msg);
    }

    pub(crate) fn attempt_failed(&self, e: &HandshakeError) {
        self.counters.attempt_failed(e);
        *lock(&self.last_error) = Some(e.to_string());
    }

    pub(crate) fn is_parked(&self) -> bool {
        *self.parked.borrow()
    }

    /// Resolves once the tunnel is parked and its last stream has ended.
    pub(crate) async fn parked_and_idle(&self) {
        let mut parked = self.parked.subscribe();
        let _ = parked.wait_for(|p| *p).await;
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    /// Resolves once the tunnel is no longer parked.
    pub(crate) async fn unparked(&self) {
        let mut parked = self.parked.subscribe();
        let _ = parked.wait_for(|p| !*p).await;
    }

    pub(crate) fn unavailable(&self, reason: String) -> DialError {
        DialError::Unavailable {
            node: self.node.name.clone(),
            path: sshbridge_core::PathKind::Ssh,
            reason,
        }
    }
}

/// Counts a stream (or a dial in progress) as open until dropped.
pub(crate) struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    pub(crate) fn new(shared: &Arc<Shared>) -> OpenGuard {
        shared.open.send_modify(|n| *n += 1);
        OpenGuard(shared.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}
