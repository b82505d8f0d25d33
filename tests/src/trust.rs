//! Trust boundaries in the kit: a TCP admin listener with a token and/or
//! mutual TLS, and raw HTTP requests to it (any method, any headers, with
//! or without TLS and a client certificate), bounded in time.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::admin::AdminAnswer;
use crate::bridge::{AdminTcp, BridgeConfig};
use crate::cluster::Cluster;
use crate::net;

/// Bound on one request.
const REQUEST: Duration = Duration::from_secs(10);

/// What a caller of a TCP admin listener may present.
#[derive(Clone)]
pub struct AdminCreds {
    /// The listener.
    pub addr: SocketAddr,
    /// The token in `token_file`, when there is one.
    pub token: Option<String>,
    /// `[admin] token_file`.
    pub token_file: Option<PathBuf>,
    /// TLS trusting the server, without a client certificate.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// TLS trusting the server, presenting a certificate from `client_ca`.
    pub mtls: Option<Arc<rustls::ClientConfig>>,
    /// The CA of the server and of the client certificates (`--admin-ca`).
    pub ca: PathBuf,
    /// The client certificate and key files (`--admin-cert`, `--admin-key`).
    pub client: Option<(PathBuf, PathBuf)>,
}

impl Cluster {
    /// Moves `config`'s admin API to a free 127.0.0.1 port, with a bearer
    /// token when `token`, and with TLS and client certificates from the
    /// cluster CA when `mtls`.
    pub fn with_tcp_admin(
        &self,
        mut config: BridgeConfig,
        token: bool,
        mtls: bool,
    ) -> anyhow::Result<(BridgeConfig, AdminCreds)> {
        let ip: IpAddr = [127, 0, 0, 1].into();
        let listen = SocketAddr::new(ip, net::free_port(ip)?);
        let (token, token_file) = if token {
            let value = format!("tok-{:032x}", rand::random::<u128>());
            let path = config.dir.join("admin.token");
            std::fs::write(&path, format!("{value}\n"))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            (Some(value), Some(path))
        } else {
            (None, None)
        };
        let (tls, mtls_config, client, server) = if mtls {
            let server = self.pki.issue_server(&[ip], &["sshbridge-admin"])?;
            let files = server.write_to(&config.dir, "admin")?;
            let pair = self.pki.issue_client("operator")?;
            let client = pair.write_to(&config.dir, "operator")?;
            (
                Some(self.pki.client_config(None)?),
                Some(self.pki.client_config(Some(&pair))?),
                Some(client),
                Some(files),
            )
        } else {
            (None, None, None, None)
        };
        config.admin_tcp = Some(AdminTcp {
            listen,
            tls: server,
            client_ca: mtls.then(|| self.ca_path.clone()),
            token_file: token_file.clone(),
        });
        let creds = AdminCreds {
            addr: listen,
            token,
            token_file,
            tls,
            mtls: mtls_config,
            ca: self.ca_path.clone(),
            client,
        };
        Ok((config, creds))
    }
}

/// One HTTP/1.1 request to `addr` (over `tls` when given) with extra
/// `headers`; any status, the whole body.
pub async fn admin_request(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<AdminAnswer> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to admin {addr}"))?;
        match tls {
            None => exchange(tcp, &req).await,
            Some(config) => {
                let name = ServerName::IpAddress(addr.ip().into());
                let s = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .context("TLS handshake with the admin API")?;
                exchange(s, &req).await
            }
        }
    };
    tokio::time::timeout(REQUEST, exchange)
        .await
        .with_context(|| format!("admin {method} {path} timed out"))?
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    req: &str,
) -> anyhow::Result<AdminAnswer> {
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify; what arrived counts.
    let _ = s.read_to_end(&mut raw).await;
    AdminAnswer::parse(&raw)
}
