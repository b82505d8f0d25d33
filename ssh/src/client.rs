//! russh's callbacks for one connection: host key verification against
//! known_hosts, and why the session ended.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use russh::client::DisconnectReason;
use russh::keys::PublicKeyOrCertificate;
use tokio::sync::oneshot;

use super::known_hosts::HostIdentity;
use super::{HostKeyError, SshContext};
use sshbridge_core::lock;

/// russh's callbacks for one connection.
pub(crate) struct Client {
    pub(crate) ctx: Arc<SshContext>,
    pub(crate) target: HostIdentity,
    /// Set when the host key was refused, so the failure is classified by
    /// our own verdict rather than by russh's error text.
    pub(crate) verdict: Arc<Mutex<Option<HostKeyError>>>,
    /// Why the session ended, for the log and `last_error`.
    pub(crate) end_reason: Arc<Mutex<Option<String>>>,
    /// The host key (or certificate) this session was accepted with, so a
    /// reload can check it against the new known_hosts.
    pub(crate) accepted: Arc<Mutex<Option<PublicKeyOrCertificate>>>,
    /// Dropped with the handler when russh's session task ends: the
    /// actor's signal that the session is gone.
    pub(crate) _ended: oneshot::Sender<()>,
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
