//! The report's `ssh_certificate` part: the OpenSSH user certificate the
//! bridge logs in to the nodes with, and how long it has left.

use serde::{Deserialize, Serialize};

/// The certificate in use (`[ssh] certificate`); absent without one.
/// Missing fields default, as in the other optional parts of the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CertificateReport {
    /// The certificate file.
    pub path: String,
    /// Its key id (`ssh-keygen -I`).
    pub key_id: String,
    /// Its serial (`ssh-keygen -z`).
    pub serial: u64,
    /// The principals it certifies.
    pub principals: Vec<String>,
    /// When it stops being valid, RFC 3339 UTC.
    pub valid_before: String,
    /// Seconds left when the report was taken (0 once expired).
    pub seconds_left: u64,
    /// Less than `[ssh] certificate_warn_before` is left.
    pub expiring: bool,
}
