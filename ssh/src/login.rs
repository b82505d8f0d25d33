//! One session, outside any tunnel: what `sshbridge doctor` uses to check
//! a node with exactly the bridge's settings (host key against
//! known_hosts, authentication with the key or certificate, a forward).

use std::sync::Arc;
use std::time::Duration;

use russh::keys::{HashAlg, PublicKeyOrCertificate};
use sshbridge_config::Node;
use sshbridge_core::lock;

use super::error::HandshakeError;
use super::session::{self, Established};
use super::SshContext;

/// An authenticated session with one node. Dropping it closes it.
pub struct Login {
    est: Established,
    node: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").field("node", &self.node).finish()
    }
}

/// Connects to `node` as a tunnel would: TCP, handshake, host key checked
/// against `ctx`'s known_hosts, authentication with `ctx`'s certificate
/// (when `[ssh] certificate` is set) or plain key, all within
/// `connect_timeout`. The error says which step failed
/// ([`HandshakeError::kind`]) and names the node and the fix.
pub async fn login(node: &Node, ctx: Arc<SshContext>) -> Result<Login, HandshakeError> {
    let est = session::establish(node, ctx).await?;
    Ok(Login {
        est,
        node: node.name.clone(),
    })
}

impl Login {
    /// SHA256 fingerprint of the host key (or of the host certificate's
    /// key) the node presented and known_hosts accepted.
    pub fn host_key_fingerprint(&self) -> Option<String> {
        lock(&self.est.accepted).as_ref().map(|k| match k {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.fingerprint(HashAlg::Sha256).to_string()
            }
            PublicKeyOrCertificate::Certificate(c) => {
                c.public_key().fingerprint(HashAlg::Sha256).to_string()
            }
        })
    }

    /// Opens a direct-tcpip channel to `host:port` as seen from the node
    /// and closes it again; the error is sshd's refusal in words
    /// (`AllowTcpForwarding`, `PermitOpen`, connection refused).
    pub async fn forward(&self, host: &str, port: u16, within: Duration) -> Result<(), String> {
        let open = self
            .est
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0);
        match tokio::time::timeout(within, open).await {
            Ok(Ok(channel)) => {
                let _ = channel.close().await;
                Ok(())
            }
            Ok(Err(russh::Error::ChannelOpenFailure(f))) => Err(super::tunnel::open_failure(&f)),
            Ok(Err(e)) => Err(format!("the session failed while opening a channel: {e}")),
            Err(_) => Err(format!(
                "sshd did not answer the channel open within {within:?}"
            )),
        }
    }

    /// Closes the session politely.
    pub async fn close(self) {
        let bye = self
            .est
            .handle
            .disconnect(russh::Disconnect::ByApplication, "done", "en");
        let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
    }
}
