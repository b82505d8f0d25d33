//! sshbridge-ssh, the SSH path: one russh client session per node, one
//! direct-tcpip channel per dialed stream. The only production crate that
//! depends on russh. Not here: routing, health probes, metrics (the daemon
//! reads [`TunnelStats`]).
//!
//! Each node's session is an actor ([`Tunnel::spawn`]) behind a cheap,
//! cloneable [`Tunnel`] handle; dropping the last handle stops the actor,
//! which closes the session and with it every stream. The actor connects
//! (TCP + handshake + auth bounded by `connect_timeout`, at most
//! `max_concurrent_handshakes` at once across all nodes), verifies the host
//! key strictly against known_hosts ([`known_hosts`]), keeps the session
//! alive with keepalives so a dead peer is noticed within
//! `keepalive_interval * keepalive_max`, and reconnects with jittered
//! exponential backoff ([`sshbridge_core::backoff::Backoff`]).
//!
//! # Slow readers
//!
//! Stock russh 0.65 refills a channel's window when data arrives, not when
//! it is consumed, and its session loop awaits each channel's bounded
//! queue: one unread channel would stall the whole session, keepalives
//! included. sshbridge runs russh with its `window_on_consume` patch
//! (vendor/README.md): every stream has a pump task that drains its channel
//! into the stream's buffer at once and returns window credit only for
//! bytes the client has read. A client that stops reading therefore holds
//! at most one window (`ssh.max_stream_buffer`) and makes only its own
//! sender on the node wait, as TCP would; the channel queue (sized to one
//! window of messages) never fills, so the node's other streams and its
//! keepalives never wait. A node that sends past the window breaks the
//! protocol: that stream is reset and counted in `streams_reset`.

#![warn(missing_docs)]

pub mod certificate;
mod client;
mod connect;
pub mod diagnose;
mod error;
mod events;
#[cfg(test)]
mod footprint;
pub mod known_hosts;
mod path;
mod rollover;
mod session;
mod shared;
mod stream;
mod tunnel;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use russh::keys::PrivateKey;
use tokio::sync::Semaphore;

pub use certificate::{CertificateError, CertificateInfo};
pub use error::HandshakeError;
pub use events::TunnelEvents;
pub use known_hosts::{HostIdentity, HostKeyError, KnownHosts, KnownHostsError};
pub use tunnel::Tunnel;

/// Why the `[ssh]` settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SshSetupError {
    /// The identity key could not be read or parsed.
    #[error("cannot load SSH identity {path}: {reason}; check [ssh].identity (an unencrypted ed25519, ECDSA or RSA key, OpenSSH or PEM format)")]
    Identity {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The known_hosts file could not be used.
    #[error(transparent)]
    KnownHosts(#[from] KnownHostsError),
    /// `[ssh].certificate` could not be used.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
}

/// Everything loaded once per config (re)load and shared by all tunnels:
/// identity key, parsed known_hosts, handshake limit, settings.
pub struct SshContext {
    cfg: sshbridge_config::Ssh,
    identity: Arc<PrivateKey>,
    /// The user certificate presented with `identity`, if configured.
    certificate: Option<Arc<CertificateInfo>>,
    known_hosts: KnownHosts,
    /// Handshakes in flight across all nodes; a permit is held from TCP
    /// connect to the end of authentication and released on drop.
    handshakes: Arc<Semaphore>,
}

impl std::fmt::Debug for SshContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SshContext")
            .field("user", &self.cfg.user)
            .field("identity", &self.cfg.identity)
            .field("certificate", &self.cfg.certificate)
            .field("known_hosts", &self.cfg.known_hosts)
            .finish_non_exhaustive()
    }
}

impl SshContext {
    /// Read the identity and known_hosts named by `cfg`.
    pub fn load(cfg: &sshbridge_config::Ssh) -> Result<Arc<SshContext>, SshSetupError> {
        let identity = russh::keys::load_secret_key(&cfg.identity, None).map_err(|e| {
            SshSetupError::Identity {
                path: cfg.identity.clone(),
                reason: e.to_string(),
            }
        })?;
        let certificate = match &cfg.certificate {
            Some(path) => Some(Arc::new(CertificateInfo::load(
                path,
                &identity,
                &cfg.identity,
                SystemTime::now(),
            )?)),
            None => None,
        };
        let known_hosts = KnownHosts::load(&cfg.known_hosts)?;
        Ok(Arc::new(SshContext {
            cfg: cfg.clone(),
            identity: Arc::new(identity),
            certificate,
            known_hosts,
            handshakes: Arc::new(Semaphore::new(cfg.max_concurrent_handshakes.max(1))),
        }))
    }

    /// The settings this context was loaded from.
    pub fn config(&self) -> &sshbridge_config::Ssh {
        &self.cfg
    }

    /// The parsed known_hosts.
    pub fn known_hosts(&self) -> &KnownHosts {
        &self.known_hosts
    }

    /// The user certificate sessions authenticate with (`None`: the
    /// plain identity key).
    pub fn certificate(&self) -> Option<&Arc<CertificateInfo>> {
        self.certificate.as_ref()
    }

    /// Whether `text` (a certificate file's contents) is the certificate
    /// this context uses.
    pub fn certificate_text_is(&self, text: &str) -> bool {
        match (
            &self.certificate,
            russh::keys::Certificate::from_openssh(text.trim()),
        ) {
            (Some(c), Ok(other)) => c.cert == other,
            _ => false,
        }
    }

    /// SHA256 fingerprint of the identity's public key.
    pub fn identity_fingerprint(&self) -> String {
        self.identity
            .public_key()
            .fingerprint(russh::keys::HashAlg::Sha256)
            .to_string()
    }

    /// What sessions authenticate with, for messages: the certificate's
    /// description, or the identity's file and fingerprint.
    pub fn credential(&self) -> String {
        match &self.certificate {
            Some(c) => c.describe(),
            None => format!(
                "key {} ({})",
                self.cfg.identity.display(),
                self.identity_fingerprint()
            ),
        }
    }

    /// Whether `other` authenticates differently (another identity key
    /// or another certificate): sessions then roll over to it.
    pub fn credential_differs(&self, other: &SshContext) -> bool {
        let certs_differ = match (&self.certificate, &other.certificate) {
            (None, None) => false,
            (Some(a), Some(b)) => !a.same_as(b),
            _ => true,
        };
        certs_differ || self.identity.public_key() != other.identity.public_key()
    }
}

/// Where a node's session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TunnelState {
    /// Connecting, handshaking or authenticating (or waiting for a
    /// handshake slot).
    Connecting,
    /// Session up; dials are served.
    Up,
    /// The last attempt failed or the session was lost; waiting to retry.
    Backoff,
    /// No new dials; waiting for open streams to end.
    Draining,
    /// Closed on purpose and not reconnecting (the node's migration was
    /// finalized); unparking reconnects.
    Parked,
    /// The actor ended (shutdown, drained or last handle dropped).
    Stopped,
}

impl TunnelState {
    /// Lower-case name for reports and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelState::Connecting => "connecting",
            TunnelState::Up => "up",
            TunnelState::Backoff => "backoff",
            TunnelState::Draining => "draining",
            TunnelState::Parked => "parked",
            TunnelState::Stopped => "stopped",
        }
    }
}

/// Kinds of handshake failure, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeFailureKind {
    /// sshd refused our key.
    Auth,
    /// The host key was unknown, changed, revoked or an invalid certificate.
    HostKey,
    /// No session within `connect_timeout`.
    Timeout,
    /// The TCP connection was refused.
    Refused,
    /// Anything else (I/O, protocol, resolution).
    Other,
}

impl HandshakeFailureKind {
    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailureKind::Auth => "auth",
            HandshakeFailureKind::HostKey => "host_key",
            HandshakeFailureKind::Timeout => "timeout",
            HandshakeFailureKind::Refused => "refused",
            HandshakeFailureKind::Other => "other",
        }
    }
}

/// Handshake failures by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandshakeFailures {
    /// sshd refused the identity.
    pub auth: u64,
    /// Host key refused.
    pub host_key: u64,
    /// `connect_timeout` expired.
    pub timeout: u64,
    /// TCP connection refused.
    pub refused: u64,
    /// Everything else.
    pub other: u64,
}

/// A snapshot of one tunnel's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct TunnelStats {
    /// State at the time of the snapshot.
    pub state: TunnelState,
    /// Established sessions that were lost (each one starts a reconnect).
    pub reconnects: u64,
    /// Failed connection attempts by kind.
    pub handshake_failures: HandshakeFailures,
    /// Streams open now.
    pub open_streams: usize,
    /// Bytes written by clients towards targets.
    pub bytes_sent: u64,
    /// Bytes received from targets.
    pub bytes_received: u64,
    /// Streams reset because the node sent past their window.
    pub streams_reset: u64,
    /// Times a stream's receive queue reached `ssh.max_stream_chunks` and
    /// was compacted into one chunk.
    pub stream_compactions: u64,
    /// The most recent failure (kept after recovery), naming node,
    /// address and what to do.
    pub last_error: Option<String>,
    /// When the current session came up; `None` when not up.
    pub up_since: Option<SystemTime>,
    /// Why the node refused the credential of the last rollover (it
    /// then keeps its old session); `None` once a rollover succeeded.
    pub rotation_refused: Option<String>,
    /// Rollovers refused by the node so far.
    pub rotations_refused: u64,
}

/// Counters shared by a tunnel's actor, its handles and its streams.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    reconnects: AtomicU64,
    fail_auth: AtomicU64,
    fail_host_key: AtomicU64,
    fail_timeout: AtomicU64,
    fail_refused: AtomicU64,
    fail_other: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    streams_reset: AtomicU64,
    pub(crate) stream_compactions: AtomicU64,
    pub(crate) rotations_refused: AtomicU64,
    /// Who hears of handshakes, sessions and compactions as they happen.
    events: Option<std::sync::Arc<dyn TunnelEvents>>,
}

impl Counters {
    fn count_failure(&self, kind: HandshakeFailureKind) {
        let c = match kind {
            HandshakeFailureKind::Auth => &self.fail_auth,
            HandshakeFailureKind::HostKey => &self.fail_host_key,
            HandshakeFailureKind::Timeout => &self.fail_timeout,
            HandshakeFailureKind::Refused => &self.fail_refused,
            HandshakeFailureKind::Other => &self.fail_other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn failures(&self) -> HandshakeFailures {
        HandshakeFailures {
            auth: self.fail_auth.load(Ordering::Relaxed),
            host_key: self.fail_host_key.load(Ordering::Relaxed),
            timeout: self.fail_timeout.load(Ordering::Relaxed),
            refused: self.fail_refused.load(Ordering::Relaxed),
            other: self.fail_other.load(Ordering::Relaxed),
        }
    }
}
