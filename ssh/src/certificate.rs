//! `[ssh] certificate`: the OpenSSH user certificate the bridge presents
//! with its identity key, what it says (key id, serial, principals,
//! validity, CA), and the checks made when it is loaded.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::{Certificate, HashAlg, PrivateKey};

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// Unreadable or not an OpenSSH certificate.
    #[error("cannot load SSH certificate {path}: {reason}; check [ssh].certificate (an OpenSSH user certificate, `ssh-keygen -s CA -I ID -n PRINCIPAL key.pub` writes key-cert.pub)")]
    Unreadable {
        /// The certificate file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A host certificate, not a user certificate.
    #[error("SSH certificate {path} is a host certificate; the bridge needs a user certificate (sign without -h)")]
    NotUser {
        /// The certificate file.
        path: PathBuf,
    },
    /// The certificate certifies another key than `[ssh].identity`.
    #[error("SSH certificate {path} is for key {certified}, but [ssh].identity {identity} is key {ours}; sign the identity's public key")]
    OtherKey {
        /// The certificate file.
        path: PathBuf,
        /// Fingerprint of the certified key.
        certified: String,
        /// The identity file.
        identity: PathBuf,
        /// Fingerprint of the identity's public key.
        ours: String,
    },
    /// Outside its validity window now.
    #[error("SSH certificate {path} (key id {key_id:?}) is {what}: {window}; issue a new one")]
    OutsideValidity {
        /// The certificate file.
        path: PathBuf,
        /// The certificate's key id.
        key_id: String,
        /// "expired" or "not yet valid".
        what: &'static str,
        /// "valid from FROM to TO (now NOW)", RFC 3339 in UTC.
        window: String,
    },
}

/// A loaded user certificate. Holds no private key material.
#[derive(Debug, Clone)]
pub struct CertificateInfo {
    /// The file it was read from.
    pub path: PathBuf,
    /// The certificate's key id (`ssh-keygen -I`).
    pub key_id: String,
    /// Its serial (`ssh-keygen -z`).
    pub serial: u64,
    /// The principals it is valid for (`ssh-keygen -n`); sshd matches
    /// them against the user name or `AuthorizedPrincipalsFile`.
    pub principals: Vec<String>,
    /// Valid from (inclusive).
    pub valid_after: SystemTime,
    /// Valid until (exclusive): the expiry.
    pub valid_before: SystemTime,
    /// SHA256 fingerprint of the CA key that signed it (what sshd's
    /// `TrustedUserCAKeys` must list).
    pub ca_fingerprint: String,
    /// The certificate itself, presented at authentication.
    pub(crate) cert: Certificate,
}

impl CertificateInfo {
    /// Reads `path` and checks that it is a user certificate for
    /// `identity`'s key, valid at `now`.
    pub fn load(
        path: &Path,
        identity: &PrivateKey,
        identity_path: &Path,
        now: SystemTime,
    ) -> Result<CertificateInfo, CertificateError> {
        let unreadable = |reason: String| CertificateError::Unreadable {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
        let cert = Certificate::from_openssh(text.trim()).map_err(|e| unreadable(e.to_string()))?;
        if cert.cert_type() != CertType::User {
            return Err(CertificateError::NotUser {
                path: path.to_path_buf(),
            });
        }
        if cert.public_key() != identity.public_key().key_data() {
            return Err(CertificateError::OtherKey {
                path: path.to_path_buf(),
                certified: cert.public_key().fingerprint(HashAlg::Sha256).to_string(),
                identity: identity_path.to_path_buf(),
                ours: identity
                    .public_key()
                    .fingerprint(HashAlg::Sha256)
                    .to_string(),
            });
        }
        let info = CertificateInfo {
            path: path.to_path_buf(),
            key_id: cert.key_id().to_owned(),
            serial: cert.serial(),
            principals: cert.valid_principals().to_vec(),
            valid_after: unix(cert.valid_after()),
            valid_before: unix(cert.valid_before()),
            ca_fingerprint: cert
                .signature_key()
                .fingerprint(HashAlg::Sha256)
                .to_string(),
            cert,
        };
        let what = if now < info.valid_after {
            Some("not yet valid")
        } else if now >= info.valid_before {
            Some("expired")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(CertificateError::OutsideValidity {
                path: info.path.clone(),
                key_id: info.key_id.clone(),
                what,
                window: format!(
                    "valid from {} to {} (now {})",
                    rfc3339(info.valid_after),
                    rfc3339(info.valid_before),
                    rfc3339(now)
                ),
            });
        }
        Ok(info)
    }

    /// Time left before expiry at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.valid_before.duration_since(now).unwrap_or_default()
    }

    /// Whether less than `margin` is left at `now`.
    pub fn expires_within(&self, margin: Duration, now: SystemTime) -> bool {
        self.remaining(now) < margin
    }

    /// Expiry as unix seconds (the metric's value).
    pub fn expiry_unix(&self) -> u64 {
        self.valid_before
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// How messages name it: file, key id, serial and CA.
    pub fn describe(&self) -> String {
        format!(
            "certificate {} (key id {:?}, serial {}, CA {})",
            self.path.display(),
            self.key_id,
            self.serial,
            self.ca_fingerprint
        )
    }

    /// Whether `other` is the same certificate (same bytes).
    pub(crate) fn same_as(&self, other: &CertificateInfo) -> bool {
        self.cert == other.cert
    }
}

/// `valid_before` of OpenSSH's "forever" is u64::MAX; clamp it to the
/// last time RFC 3339 can write.
fn unix(secs: u64) -> SystemTime {
    // 9999-12-31T23:59:59Z, the last instant RFC 3339 can write.
    const MAX: u64 = 253_402_300_799;
    UNIX_EPOCH + Duration::from_secs(secs.min(MAX))
}

/// RFC 3339 in UTC, seconds precision.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests;
