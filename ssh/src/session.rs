//! The per-node session actor: connect, verify, authenticate, keep alive,
//! back off and reconnect.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use russh::client::{DisconnectReason, Handle};
use russh::keys::{Algorithm, HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::known_hosts::HostIdentity;
use super::tunnel::Shared;
use super::{HandshakeFailureKind, HostKeyError, SshContext, TunnelState};
use sshbridge_core::backoff::Backoff;
use sshbridge_core::quickack::QuickAck;

pub use super::tunnel::Tunnel;

/// Why one connection attempt to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// TCP connection refused.
    #[error(
        "node {node}: TCP connection to {addr} refused; check that sshd runs and listens there"
    )]
    Refused {
        /// Node name.
        node: String,
        /// sshd address.
        addr: String,
    },
    /// `connect_timeout` expired.
    #[error("node {node}: no SSH session with {addr} within {after:?} (ssh.connect_timeout); check the network path and that sshd answers")]
    Timeout {
        /// Node name.
        node: String,
        /// sshd address.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The host key was refused.
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    /// sshd refused the identity.
    #[error("node {node}: sshd at {addr} refused public key {fingerprint} for user {user}; add it to that user's authorized_keys on the node")]
    Auth {
        /// Node name.
        node: String,
        /// sshd address.
        addr: String,
        /// Remote user.
        user: String,
        /// SHA256 fingerprint of the identity's public key.
        fingerprint: String,
    },
    /// Resolution or TCP failure other than a refusal.
    #[error(
        "node {node}: cannot connect to {addr}: {reason}; check the address and the network path"
    )]
    Connect {
        /// Node name.
        node: String,
        /// sshd address.
        addr: String,
        /// The OS error.
        reason: String,
    },
    /// The SSH protocol failed (version, algorithms, disconnect...).
    #[error("node {node}: SSH handshake with {addr} failed: {reason}; check that sshd there is OpenSSH and accepts our algorithms")]
    Protocol {
        /// Node name.
        node: String,
        /// sshd address.
        addr: String,
        /// russh's description.
        reason: String,
    },
}

impl HandshakeError {
    /// The counter this failure goes to.
    pub fn kind(&self) -> HandshakeFailureKind {
        match self {
            HandshakeError::Refused { .. } => HandshakeFailureKind::Refused,
            HandshakeError::Timeout { .. } => HandshakeFailureKind::Timeout,
            HandshakeError::HostKey(_) => HandshakeFailureKind::HostKey,
            HandshakeError::Auth { .. } => HandshakeFailureKind::Auth,
            HandshakeError::Connect { .. } | HandshakeError::Protocol { .. } => {
                HandshakeFailureKind::Other
            }
        }
    }
}

/// russh's callbacks for one connection.
pub(crate) struct Client {
    ctx: Arc<SshContext>,
    target: HostIdentity,
    /// Set when the host key was refused, so the failure is classified by
    /// our own verdict rather than by russh's error text.
    verdict: Arc<Mutex<Option<HostKeyError>>>,
    /// Why the session ended, for the log and `last_error`.
    end_reason: Arc<Mutex<Option<String>>>,
    /// The host key (or certificate) this session was accepted with, so a
    /// reload can check it against the new known_hosts.
    accepted: Arc<Mutex<Option<PublicKeyOrCertificate>>>,
    /// Dropped with the handler when russh's session task ends: the
    /// actor's signal that the session is gone.
    _ended: oneshot::Sender<()>,
}

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match self.ctx.known_hosts().verify(&self.target, key, now) {
            Ok(()) => {
                *lock(&self.accepted) = Some(copy_key(key));
                Ok(true)
            }
            Err(e) => {
                *lock(&self.verdict) = Some(e);
                Ok(false)
            }
        }
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let text = match &reason {
            DisconnectReason::ReceivedDisconnect(info) => {
                format!(
                    "sshd disconnected ({:?}): {}",
                    info.reason_code, info.message
                )
            }
            DisconnectReason::Error(russh::Error::KeepaliveTimeout) => {
                let cfg = self.ctx.config();
                format!(
                    "no answer to {} keepalives (every {:?}); the node or the path to it is down",
                    cfg.keepalive_max, cfg.keepalive_interval
                )
            }
            DisconnectReason::Error(russh::Error::HUP) => "connection closed by the node".into(),
            DisconnectReason::Error(e) => e.to_string(),
        };
        *lock(&self.end_reason) = Some(text);
        match reason {
            DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            DisconnectReason::Error(e) => Err(e),
        }
    }
}

/// A copy of a presented host key (russh's type is not `Clone`).
pub(crate) fn copy_key(key: &PublicKeyOrCertificate) -> PublicKeyOrCertificate {
    match key {
        PublicKeyOrCertificate::PublicKey { key, hash_alg } => PublicKeyOrCertificate::PublicKey {
            key: key.clone(),
            hash_alg: *hash_alg,
        },
        PublicKeyOrCertificate::Certificate(c) => PublicKeyOrCertificate::Certificate(c.clone()),
    }
}

pub(crate) use sshbridge_core::lock;

/// A session that is up.
struct Established {
    handle: Handle<Client>,
    ended: oneshot::Receiver<()>,
    end_reason: Arc<Mutex<Option<String>>>,
    accepted: Arc<Mutex<Option<PublicKeyOrCertificate>>>,
}

/// The actor: runs until `stop` is cancelled.
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut backoff = Backoff::new(&shared.context().config().backoff);
    let (node, addr) = (shared.node.name.clone(), shared.addr.clone());
    loop {
        if shared.is_parked() {
            shared.set_state(TunnelState::Parked);
            tracing::info!(node = %node, addr = %addr, "ssh tunnel parked");
            tokio::select! {
                _ = shared.unparked() => backoff.reset(),
                _ = stop.cancelled() => break,
            }
        }
        shared.set_state(TunnelState::Connecting);
        let ctx = shared.context();
        let attempt = tokio::select! {
            r = establish(&shared, ctx) => r,
            _ = stop.cancelled() => break,
        };
        match attempt {
            Ok(est) => {
                let handle = Arc::new(est.handle);
                let up_at = tokio::time::Instant::now();
                shared.session_up(handle.clone(), lock(&est.accepted).take());
                tracing::info!(node = %node, addr = %addr, "ssh session up");
                let end = tokio::select! {
                    _ = est.ended => None,
                    why = shared.host_key_distrusted() => {
                        tracing::warn!(node = %node, addr = %addr, reason = %why,
                            "closing the ssh session: its host key is no longer trusted");
                        shared.session_lost(format!(
                            "node {node}: SSH session with {addr} closed: {why}; reconnecting"
                        ));
                        Some("host key no longer trusted")
                    }
                    _ = stop.cancelled() => Some("sshbridge stopping"),
                    _ = shared.parked_and_idle() => Some("sshbridge no longer needs this session"),
                };
                shared.session_down();
                if let Some(why) = end {
                    let bye = handle.disconnect(russh::Disconnect::ByApplication, why, "en");
                    let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
                    if stop.is_cancelled() {
                        break;
                    }
                    continue;
                }
                let reason = lock(&est.end_reason)
                    .take()
                    .unwrap_or_else(|| "connection closed".into());
                let msg = format!(
                    "node {node}: SSH session with {addr} was lost: {reason}; reconnecting"
                );
                tracing::warn!(node = %node, addr = %addr, reason = %reason, "ssh session lost");
                shared.session_lost(msg);
                backoff.reset_if_stable(up_at.elapsed());
            }
            Err(e) => {
                tracing::warn!(node = %node, addr = %addr, kind = e.kind().as_str(), error = %e, "ssh connect failed");
                shared.attempt_failed(&e);
            }
        }
        shared.set_state(TunnelState::Backoff);
        tokio::select! {
            _ = backoff.wait() => {}
            _ = stop.cancelled() => break,
        }
    }
    shared.session_down();
    shared.set_state(TunnelState::Stopped);
    tracing::debug!(node = %node, addr = %addr, "ssh tunnel stopped");
}

/// One attempt: a handshake slot, then TCP + handshake + auth within
/// `connect_timeout`.
async fn establish(shared: &Shared, ctx: Arc<SshContext>) -> Result<Established, HandshakeError> {
    let after = ctx.config().connect_timeout;
    // The semaphore is never closed, so acquiring cannot fail.
    let _permit = ctx.handshakes.clone().acquire_owned().await.ok();
    match tokio::time::timeout(after, handshake(shared, ctx)).await {
        Ok(r) => r,
        Err(_) => Err(HandshakeError::Timeout {
            node: shared.node.name.clone(),
            addr: shared.addr.clone(),
            after,
        }),
    }
}

async fn handshake(shared: &Shared, ctx: Arc<SshContext>) -> Result<Established, HandshakeError> {
    let node = &shared.node;
    let (name, addr) = (node.name.clone(), shared.addr.clone());
    let protocol = |e: russh::Error| HandshakeError::Protocol {
        node: name.clone(),
        addr: addr.clone(),
        reason: e.to_string(),
    };
    let tcp = TcpStream::connect((node.ssh_address.host.as_str(), node.ssh_address.port))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => HandshakeError::Refused {
                node: name.clone(),
                addr: addr.clone(),
            },
            _ => HandshakeError::Connect {
                node: name.clone(),
                addr: addr.clone(),
                reason: e.to_string(),
            },
        })?;
    let _ = tcp.set_nodelay(true);
    // sshd leaves Nagle on for sessions without a pty: acknowledge what
    // it sends at once, or its second small packet waits for our delayed
    // ACK (up to 40 ms; see core's `quickack`).

    let target = shared.identity();
    let config = Arc::new(client_config(&ctx, &target));
    let verdict = Arc::new(Mutex::new(None));
    let end_reason = Arc::new(Mutex::new(None));
    let accepted = Arc::new(Mutex::new(None));
    let (ended_tx, ended) = oneshot::channel();
    let client = Client {
        ctx: ctx.clone(),
        target,
        verdict: verdict.clone(),
        end_reason: end_reason.clone(),
        accepted: accepted.clone(),
        _ended: ended_tx,
    };
    let mut handle = match russh::client::connect_stream(config, QuickAck::new(tcp), client).await {
        Ok(h) => h,
        Err(e) => {
            return Err(match lock(&verdict).take() {
                Some(v) => HandshakeError::HostKey(v),
                None => protocol(e),
            })
        }
    };

    let identity = ctx.identity.clone();
    let hash = if identity.algorithm().is_rsa() {
        // `None`: the server announced no signature algorithms; every
        // OpenSSH since 7.2 takes rsa-sha2-256.
        handle
            .best_supported_rsa_hash()
            .await
            .map_err(protocol)?
            .unwrap_or(Some(HashAlg::Sha256))
    } else {
        None
    };
    let user = ctx.config().user.clone();
    let res = handle
        .authenticate_publickey(
            user.clone(),
            PrivateKeyWithHashAlg::new(identity.clone(), hash),
        )
        .await
        .map_err(protocol)?;
    if !res.success() {
        return Err(HandshakeError::Auth {
            node: name,
            addr,
            user,
            fingerprint: identity
                .public_key()
                .fingerprint(HashAlg::Sha256)
                .to_string(),
        });
    }
    Ok(Established {
        handle,
        ended,
        end_reason,
        accepted,
    })
}

/// russh settings for one connection to `target`.
pub(crate) fn client_config(ctx: &SshContext, target: &HostIdentity) -> russh::client::Config {
    let cfg = ctx.config();
    // Consumption-driven windows (vendor/README.md): a channel's queue holds
    // at most one window of data messages of at least one byte each, so it
    // can never fill and block the session loop.
    let window = u32::try_from(cfg.max_stream_buffer).unwrap_or(u32::MAX);
    let mut c = russh::client::Config {
        window_size: window,
        window_on_consume: true,
        channel_buffer_size: window as usize + 64,
        nodelay: true,
        inactivity_timeout: None,
        ..Default::default()
    };
    // russh declares the peer dead when a timer tick finds `keepalive_max`
    // keepalives unanswered, i.e. after (max + 1) ticks; shorten the tick
    // so detection lands at `keepalive_interval * keepalive_max`.
    let max = cfg.keepalive_max;
    if max > 0 && !cfg.keepalive_interval.is_zero() {
        c.keepalive_interval = Some(cfg.keepalive_interval * max / (max + 1));
        c.keepalive_max = max as usize;
    } else {
        c.keepalive_interval = None;
    }
    // Ask for the key types known_hosts lists for this host first, so a
    // host with several keys presents one we can check (as OpenSSH does).
    let (known, has_ca) = ctx.known_hosts().known_algorithms(target);
    let defaults = russh::Preferred::DEFAULT.key.to_vec();
    let mut keys = Vec::new();
    for alg in known {
        if matches!(alg, Algorithm::Rsa { .. }) {
            keys.extend(
                defaults
                    .iter()
                    .filter(|a| matches!(a, Algorithm::Rsa { .. }))
                    .cloned(),
            );
        } else {
            keys.push(alg);
        }
    }
    for alg in &defaults {
        if !keys.contains(alg) {
            keys.push(alg.clone());
        }
    }
    c.preferred.key = keys.into();
    if has_ca {
        c.preferred.host_key_certificates = defaults.into();
    }
    c
}
