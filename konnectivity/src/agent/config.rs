//! The agent's settings ([`AgentConfig`], upstream's defaults) and why
//! setting it up can fail ([`AgentError`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use super::allow::AllowList;

/// Everything an agent needs; build with [`AgentConfig::new`] and adjust
/// the public fields.
#[derive(Clone)]
pub struct AgentConfig {
    /// The server's `HOST:PORT`.
    pub server: String,
    /// The name the server's certificate must carry (DNS name or IP SAN).
    pub server_name: ServerName<'static>,
    /// TLS client config (roots, optional client certificate). The agent
    /// adds ALPN `h2`, which gRPC servers require.
    pub tls: Arc<rustls::ClientConfig>,
    /// `agentID` metadata.
    pub agent_id: String,
    /// `agentIdentifiers` metadata, URL-query form (`host=..&ipv4=..`).
    pub identifiers: String,
    /// What the agent may dial; empty allows everything.
    pub allow: AllowList,
    /// A file holding a bearer token, read at every connect (tokens rotate).
    pub token_file: Option<PathBuf>,
    /// Time limit of one dial to a target (upstream: 5 s).
    pub dial_timeout: Duration,
    /// Time limit of TCP + TLS + the stream's response headers.
    pub connect_timeout: Duration,
    /// HTTP/2 ping interval; the stream is dropped when a ping is not
    /// answered within the same time.
    pub keepalive: Duration,
    /// Delays between turns of the sync loop (upstream's `--sync-interval`
    /// and `--sync-interval-cap`, growing by 1.5 with 10 % jitter).
    pub backoff: sshbridge_config::Backoff,
    /// Keep dialing when every server is held, to find a `serverCount`
    /// that grew (upstream's `--sync-forever`).
    pub sync_forever: bool,
    /// Bytes that may wait towards one target; past it the agent stops
    /// reading the stream until the target takes some.
    pub write_buffer: usize,
    /// How long a CLOSE_REQ may wait for queued bytes to reach the target.
    pub close_grace: Duration,
    /// How long a target with a full queue may take no bytes before its
    /// connection is closed (meanwhile the stream waits for it).
    /// Compatibility mode only.
    pub stall_timeout: Duration,
    /// Extensions offered to the server (docs/konnectivity.md); used only
    /// when the server announces them too.
    pub extensions: crate::Extensions,
    /// Receive window per connection with the `credit` extension.
    pub credit_window: usize,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("server", &self.server)
            .field("server_name", &self.server_name)
            .field("agent_id", &self.agent_id)
            .field("identifiers", &self.identifiers)
            .field("allow", &self.allow)
            .field("token_file", &self.token_file)
            .field("dial_timeout", &self.dial_timeout)
            .finish_non_exhaustive()
    }
}

/// Why an agent could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// `--server` is not `HOST:PORT`.
    #[error(
        "--server {server:?}: {what} (expected HOST:PORT, e.g. 10.0.0.1:8132 or [fd00::1]:8132)"
    )]
    ServerAddress {
        /// The value given.
        server: String,
        /// What is wrong.
        what: String,
    },
    /// A certificate, key or CA file is unusable.
    #[error(transparent)]
    Tls(#[from] sshbridge_core::tls::TlsError),
    /// rustls refused the client certificate and key.
    #[error("client certificate {cert}: {source}; check that the key belongs to the certificate")]
    ClientCert {
        /// The certificate file.
        cert: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

impl AgentConfig {
    /// A config with upstream's defaults: dial timeout 5 s, sync interval
    /// 1 s growing by 1.5 up to 10 s, 4 MiB per-connection write queue. The server name is
    /// the host part of `server`.
    pub fn new(
        server: impl Into<String>,
        tls: Arc<rustls::ClientConfig>,
        agent_id: impl Into<String>,
    ) -> Result<AgentConfig, AgentError> {
        let server = server.into();
        let host = server_host(&server)?;
        let server_name =
            ServerName::try_from(host.clone()).map_err(|e| AgentError::ServerAddress {
                server: server.clone(),
                what: format!("{host:?} is neither a DNS name nor an IP address: {e}"),
            })?;
        Ok(AgentConfig {
            server,
            server_name,
            tls,
            agent_id: agent_id.into(),
            identifiers: String::new(),
            allow: AllowList::default(),
            token_file: None,
            dial_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(30),
            backoff: sshbridge_config::Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(10),
                multiplier: super::servers::SYNC_FACTOR,
                jitter: super::servers::SYNC_JITTER,
            },
            sync_forever: false,
            write_buffer: 4 << 20,
            stall_timeout: Duration::from_secs(30),
            close_grace: Duration::from_secs(5),
            extensions: crate::Extensions::ALL,
            credit_window: crate::flow::DEFAULT_CREDIT_WINDOW,
        })
    }

    /// A TLS client config trusting `ca` and presenting `identity`
    /// (certificate, key) when given; ring provider.
    pub fn client_tls(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Arc<rustls::ClientConfig>, AgentError> {
        let builder = rustls::ClientConfig::builder_with_provider(sshbridge_core::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| AgentError::ClientCert {
                cert: ca.into(),
                source,
            })?
            .with_root_certificates(sshbridge_core::tls::load_roots(ca)?);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    sshbridge_core::tls::load_certs(cert)?,
                    sshbridge_core::tls::load_key(key)?,
                )
                .map_err(|source| AgentError::ClientCert {
                    cert: cert.into(),
                    source,
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// The host of `HOST:PORT` (brackets of an IPv6 literal removed).
fn server_host(server: &str) -> Result<String, AgentError> {
    let err = |what: &str| AgentError::ServerAddress {
        server: server.to_string(),
        what: what.to_string(),
    };
    let (host, port) = server.rsplit_once(':').ok_or_else(|| err("no port"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| err("bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(err("no host"));
    }
    Ok(host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_host_takes_names_ips_and_bracketed_ipv6() {
        assert_eq!(server_host("proxy.example:8132").unwrap(), "proxy.example");
        assert_eq!(server_host("10.0.0.1:8132").unwrap(), "10.0.0.1");
        assert_eq!(server_host("[fd00::1]:8132").unwrap(), "fd00::1");
        for bad in ["10.0.0.1", "10.0.0.1:0", ":8132", "h:port"] {
            let e = server_host(bad).unwrap_err().to_string();
            assert!(e.contains("expected HOST:PORT"), "{bad}: {e}");
        }
    }
}
