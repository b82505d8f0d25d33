//! Why a connection attempt to a node failed.

use std::time::Duration;

use super::{HandshakeFailureKind, HostKeyError};

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
    /// sshd refused the identity's plain public key.
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
    /// sshd refused the user certificate.
    #[error("node {node}: sshd at {addr} refused {certificate} with principals [{principals}] for user {user}; the node's sshd must trust that CA (TrustedUserCAKeys) and accept one of those principals for {user} (AuthorizedPrincipalsFile, or the user name itself)")]
    CertificateAuth {
        /// Node name.
        node: String,
        /// sshd address.
        addr: String,
        /// Remote user.
        user: String,
        /// The certificate: file, key id, serial, CA fingerprint.
        certificate: String,
        /// Its principals, comma-separated.
        principals: String,
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
            HandshakeError::Auth { .. } | HandshakeError::CertificateAuth { .. } => {
                HandshakeFailureKind::Auth
            }
            HandshakeError::Connect { .. } | HandshakeError::Protocol { .. } => {
                HandshakeFailureKind::Other
            }
        }
    }
}
