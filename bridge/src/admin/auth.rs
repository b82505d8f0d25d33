//! Who may call the admin API over TCP: a client certificate from
//! `[admin] client_ca` (mutual TLS) or the bearer token of
//! `[admin] token_file`. The unix socket needs neither: its mode (0600)
//! already says who may connect.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_rustls::TlsAcceptor;

use crate::tls::{self, TlsError};

/// Endpoints served without credentials on TCP: liveness and readiness
/// probes, which reveal nothing and change nothing.
pub const OPEN_PATHS: [&str; 2] = ["/livez", "/readyz"];

/// The admin API's bearer token. Never printed: `Debug` shows `MASKED`.
#[derive(Clone)]
pub struct Token {
    /// SHA-256 of the token, so comparisons take the same time whatever
    /// the presented token's length.
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(MASKED)")
    }
}

/// The token file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It could not be read.
    #[error("admin.token_file {path}: {source}; check the path and that the daemon may read it")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It holds no token.
    #[error("admin.token_file {path} is empty; write a long random token into it, e.g. `head -c 32 /dev/urandom | base64 > {path}`")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

impl Token {
    /// The token in `path`: its content without surrounding whitespace.
    pub fn read(path: &Path) -> Result<Token, TokenError> {
        let text = std::fs::read(path).map_err(|source| TokenError::Read {
            path: path.into(),
            source,
        })?;
        let token = text.trim_ascii();
        if token.is_empty() {
            return Err(TokenError::Empty { path: path.into() });
        }
        Ok(Token::new(token))
    }

    /// A token from its bytes.
    pub fn new(token: &[u8]) -> Token {
        Token {
            digest: Sha256::digest(token).into(),
        }
    }

    /// Whether `presented` is this token, in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        self.digest.ct_eq(&digest).into()
    }
}

/// How TCP callers authenticate. At least one of the two is set (the
/// config refuses a TCP listener with neither).
#[derive(Clone)]
pub struct TcpAuth {
    /// TLS of the listener; with a client CA, a verified client
    /// certificate authenticates the caller.
    pub tls: Option<(TlsAcceptor, bool)>,
    /// The bearer token.
    pub token: Option<Token>,
    /// Bounds the TLS handshakes of the listener (`admin.max_tls_handshakes`,
    /// `admin.tls_handshake_timeout`); `None`: one at a time per caller,
    /// within the request timeout.
    pub handshakes: Option<crate::handshake::HandshakeLimit>,
}

impl std::fmt::Debug for TcpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpAuth")
            .field("tls", &self.tls.is_some())
            .field("client_ca", &self.tls.as_ref().is_some_and(|t| t.1))
            .field("token", &self.token)
            .finish()
    }
}

/// The admin server's TLS config: its certificate, and with `client_ca`
/// an optional client certificate (optional so `/livez` and `/readyz`
/// stay reachable; other endpoints need it or the token).
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = tls::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            path: cert.into(),
            source,
        })?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = Arc::new(tls::load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Content {
                    path: ca.into(),
                    what: format!("unusable client CA: {e}"),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(tls::load_certs(cert)?, tls::load_key(key)?)
        .map_err(|source| TlsError::Rustls {
            path: cert.into(),
            source,
        })?;
    Ok(Arc::new(config))
}

/// The token of an `Authorization: Bearer TOKEN` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_never_print() {
        let t = Token::new(b"s3cret-token");
        assert!(t.matches(b"s3cret-token"));
        assert!(!t.matches(b"s3cret-toke"));
        assert!(!t.matches(b"s3cret-token2"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "Token(MASKED)");
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn token_file_is_trimmed_and_empty_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc123\n").unwrap();
        assert!(Token::read(&path).unwrap().matches(b"abc123"));
        std::fs::write(&path, " \n").unwrap();
        let e = Token::read(&path).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
    }
}
