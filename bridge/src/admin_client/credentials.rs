//! What the CLI presents to a TCP admin API: TLS that verifies the server
//! against `--admin-ca`, a client certificate (`--admin-cert`/`--admin-key`)
//! and a bearer token (`--token-file`). None of it is used on a unix socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::tls::{self, TlsError};

/// Credentials for a TCP admin API. The token never prints (`Debug` shows
/// `MASKED`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// CA that the admin server's certificate must chain to; set, the
    /// connection is TLS.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Bearer token, sent as `Authorization: Bearer ...`.
    token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("ca", &self.ca)
            .field("identity", &self.identity)
            .field("token", &self.token.as_ref().map(|_| "MASKED"))
            .finish()
    }
}

/// The flags do not make a usable set of credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A client certificate without a CA to check the server by.
    #[error("--admin-cert needs --admin-ca, the CA that verifies the admin server's certificate")]
    CertWithoutCa,
    /// Only one of cert and key.
    #[error("--admin-cert and --admin-key go together")]
    HalfIdentity,
    /// The token file is unreadable or empty.
    #[error("--token-file {path}: {reason}")]
    Token {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl Credentials {
    /// Credentials from the CLI flags; the token file is read now.
    pub fn from_flags(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        token_file: Option<&Path>,
    ) -> Result<Credentials, CredentialsError> {
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c.to_path_buf(), k.to_path_buf())),
            (None, None) => None,
            _ => return Err(CredentialsError::HalfIdentity),
        };
        if identity.is_some() && ca.is_none() {
            return Err(CredentialsError::CertWithoutCa);
        }
        let token = match token_file {
            Some(path) => {
                let err = |reason: String| CredentialsError::Token {
                    path: path.into(),
                    reason,
                };
                let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
                let token = text.trim();
                if token.is_empty() || token.contains(['\r', '\n']) {
                    return Err(err("holds no single-line token".into()));
                }
                Some(token.to_string())
            }
            None => None,
        };
        Ok(Credentials {
            ca: ca.map(Path::to_path_buf),
            identity,
            token,
        })
    }

    /// The `Authorization` header's value, when there is a token.
    pub(crate) fn authorization(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// The TLS client config, when TLS is asked for.
    pub(crate) fn tls(&self) -> Result<Option<Arc<ClientConfig>>, TlsError> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let builder = ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                path: ca.clone(),
                source,
            })?
            .with_root_certificates(tls::load_roots(ca)?);
        let config = match &self.identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(tls::load_certs(cert)?, tls::load_key(key)?)
                .map_err(|source| TlsError::Rustls {
                    path: cert.clone(),
                    source,
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(Some(Arc::new(config)))
    }
}

/// The name the admin server's certificate must carry: the host of
/// `host:port` (an IP literal or a DNS name).
pub(crate) fn server_name(addr: &str) -> Option<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).ok()
}
