//! Binding what the config names. Only the binary calls this; tests hand
//! the daemon listeners they bound themselves.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::stat::{umask, Mode};
use sshbridge_config::{Config, Listen};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;

use crate::admin::{auth, AdminListener, TcpAuth};
use crate::tls::{self, TlsError};

/// The egress listeners of a daemon.
#[derive(Default)]
pub struct Listeners {
    /// HTTP CONNECT over a unix socket.
    pub http_connect_uds: Option<UnixListener>,
    /// HTTP CONNECT over TCP with mutual TLS.
    pub http_connect_tcp: Option<(TcpListener, TlsAcceptor)>,
    /// Konnectivity `ProxyService` over a unix socket.
    pub grpc_uds: Option<UnixListener>,
    /// The Konnectivity agent server (TLS always).
    pub konnectivity: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    /// The admin API.
    pub admin: Option<AdminListener>,
}

/// A listener could not be set up; says which key and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process serves the socket already.
    #[error("{key} = {path}: another process is listening on this socket; stop it or choose another path")]
    InUse {
        /// Config key.
        key: &'static str,
        /// Socket path.
        path: PathBuf,
    },
    /// The socket or its directory could not be created.
    #[error("{key} = {path}: {source}")]
    Unix {
        /// Config key.
        key: &'static str,
        /// Socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TCP address could not be bound.
    #[error("{key} = {addr}: {source}")]
    Tcp {
        /// Config key.
        key: &'static str,
        /// Address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The admin token file is unusable.
    #[error(transparent)]
    AdminToken(auth::TokenError),
    /// A TCP admin listener with no way to authenticate callers.
    #[error("admin.listen: a TCP admin listener needs [admin] client_ca (with cert and key) or token_file, so that callers authenticate")]
    AdminOpen,
    /// The TLS files are unusable.
    #[error("{key}: {source}")]
    Tls {
        /// Config key.
        key: &'static str,
        /// Why.
        source: TlsError,
    },
}

impl Listeners {
    /// Binds the egress listeners of `config`.
    pub async fn bind(config: &Config) -> Result<Listeners, BindError> {
        let mut out = Listeners::default();
        if let Some(path) = &config.egress.grpc_uds {
            out.grpc_uds = Some(bind_unix("egress.grpc_uds", path).await?);
        }
        if let Some(k) = &config.konnectivity {
            let tls =
                crate::konnectivity::server::tls_config(&k.cert, &k.key, k.client_ca.as_deref())
                    .map_err(|source| BindError::Tls {
                        key: "konnectivity",
                        source,
                    })?;
            let listener =
                TcpListener::bind(k.agent_listen)
                    .await
                    .map_err(|source| BindError::Tcp {
                        key: "konnectivity.agent_listen",
                        addr: k.agent_listen,
                        source,
                    })?;
            out.konnectivity = Some((listener, tls));
        }
        if let Some(path) = &config.egress.http_connect_uds {
            out.http_connect_uds = Some(bind_unix("egress.http_connect_uds", path).await?);
        }
        if let Some(t) = &config.egress.http_connect_tcp {
            let key = "egress.http_connect_tcp";
            let tls = tls::mtls_server_config(&t.cert, &t.key, &t.client_ca)
                .map_err(|source| BindError::Tls { key, source })?;
            let listener = TcpListener::bind(t.listen)
                .await
                .map_err(|source| BindError::Tcp {
                    key,
                    addr: t.listen,
                    source,
                })?;
            out.http_connect_tcp = Some((listener, TlsAcceptor::from(tls)));
        }
        out.admin = Some(match &config.admin.listen {
            Listen::Unix(path) => AdminListener::Unix(bind_unix("admin.listen", path).await?),
            Listen::Tcp(addr) => {
                let auth = admin_auth(&config.admin)?;
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| BindError::Tcp {
                        key: "admin.listen",
                        addr: *addr,
                        source,
                    })?;
                AdminListener::Tcp(listener, auth)
            }
        });
        Ok(out)
    }
}

/// How TCP admin callers authenticate: TLS (with client certificates from
/// `client_ca`) and the token of `token_file`. Refuses a listener with
/// neither, whatever the config check said.
fn admin_auth(admin: &sshbridge_config::Admin) -> Result<TcpAuth, BindError> {
    let tls = match &admin.tls {
        Some(t) => {
            let config =
                auth::tls_config(&t.cert, &t.key, t.client_ca.as_deref()).map_err(|source| {
                    BindError::Tls {
                        key: "admin",
                        source,
                    }
                })?;
            Some((TlsAcceptor::from(config), t.client_ca.is_some()))
        }
        None => None,
    };
    let token = match &admin.token_file {
        Some(path) => Some(auth::Token::read(path).map_err(BindError::AdminToken)?),
        None => None,
    };
    if token.is_none() && !tls.as_ref().is_some_and(|t| t.1) {
        return Err(BindError::AdminOpen);
    }
    Ok(TcpAuth {
        tls,
        token,
        handshakes: None,
    })
}

/// Binds a unix socket with mode 0600. A stale socket file (nobody
/// listening) is replaced; a live one is an error. A missing parent
/// directory is created with mode 0750.
pub async fn bind_unix(key: &'static str, path: &Path) -> Result<UnixListener, BindError> {
    let err = |source| BindError::Unix {
        key,
        path: path.into(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(err(std::io::Error::other(
                "exists and is not a socket; remove it or choose another path",
            )));
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(BindError::InUse {
                key,
                path: path.into(),
            });
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::create_dir_all(dir).map_err(err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).map_err(err)?;
    }
    // The socket is created 0600 by bind(2) itself, under umask 0177, so
    // it is never open to others, not even until the chmod below. The
    // umask is process-wide: this runs at start, before any other thread
    // creates files, and restores it at once.
    let previous = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(previous);
    let listener = bound.map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unix_socket_is_private_and_stale_files_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/egress.sock");
        let first = bind_unix("k", &path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // While it is served, a second bind is refused and names the key.
        let e = bind_unix("egress.http_connect_uds", &path)
            .await
            .unwrap_err();
        assert!(matches!(e, BindError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("egress.http_connect_uds"));
        // Once the listener is gone, the stale file is replaced.
        drop(first);
        let _second = bind_unix("k", &path).await.unwrap();
        assert!(tokio::net::UnixStream::connect(&path).await.is_ok());
    }

    #[tokio::test]
    async fn a_regular_file_in_the_way_is_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.sock");
        std::fs::write(&path, b"keep me").unwrap();
        let e = bind_unix("egress.http_connect_uds", &path)
            .await
            .unwrap_err();
        // Refused because it is not a socket, naming the key, the path and the fix.
        let text = e.to_string();
        assert!(matches!(e, BindError::Unix { .. }), "{e}");
        for want in [
            "egress.http_connect_uds",
            &path.display().to_string(),
            "is not a socket; remove it or choose another path",
        ] {
            assert!(text.contains(want), "{text} must say {want:?}");
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    }
}
