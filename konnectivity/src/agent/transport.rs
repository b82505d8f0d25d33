//! The agent's link to the server: TCP, TLS (ALPN `h2`) and one
//! `AgentService.Connect` stream carrying the agent's metadata.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::Service;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};

use super::AgentConfig;
use crate::flow::{self, Extensions};
use crate::proto::agent_service_client::AgentServiceClient;
use crate::proto::Packet;

/// Packets waiting to go to the server, from all connections together.
/// When full, target readers wait: the server link is the shared resource.
const OUTBOUND_PACKETS: usize = 64;

/// An established stream.
pub(super) struct Link {
    /// Packets from the server.
    pub inbound: tonic::Streaming<Packet>,
    /// Packets to the server; dropping every clone ends the request side.
    pub outbound: mpsc::Sender<Packet>,
    /// The server's `serverID` header.
    pub server_id: String,
    /// The server's `serverCount` header; `None` when missing or not a
    /// number.
    pub server_count: Option<usize>,
    /// Extensions both sides announced.
    pub ext: Extensions,
    /// The server's receive window per connection (with `credit`).
    pub peer_window: usize,
    /// Keeps the HTTP/2 connection's client alive as long as the stream.
    pub _client: AgentServiceClient<Channel>,
}

/// Why connecting failed; every variant names the server and what to check.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    #[error("cannot reach the Konnectivity server {server}: {source}; check --server, the network and the server's certificate (--ca-cert, --server-name)")]
    Transport {
        server: String,
        source: tonic::transport::Error,
    },
    #[error("Konnectivity server {server} refused the agent stream: {status}; check the agent's certificate, --agent-id and token")]
    Rpc {
        server: String,
        status: tonic::Status,
    },
    #[error("no answer from the Konnectivity server {server} within {secs:?}s; check --server and that it speaks gRPC over TLS")]
    Timeout { server: String, secs: f64 },
    #[error("cannot read the token file {path}: {source}")]
    Token {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("agent metadata is not a valid HTTP header value ({what}); use ASCII without control characters")]
    Metadata { what: &'static str },
}

/// TCP + TLS to the server, for tonic's channel.
#[derive(Clone)]
struct TlsDial {
    server: String,
    name: ServerName<'static>,
    tls: TlsConnector,
}

impl Service<Uri> for TlsDial {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let dial = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&dial.server).await?;
            tcp.set_nodelay(true)?;
            let tls = dial.tls.connect(dial.name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Connects and opens the Connect stream, within `connect_timeout`.
pub(super) async fn connect(cfg: &AgentConfig) -> Result<Link, ConnectError> {
    let secs = cfg.connect_timeout.as_secs_f64();
    match tokio::time::timeout(cfg.connect_timeout, open(cfg)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout {
            server: cfg.server.clone(),
            secs,
        }),
    }
}

async fn open(cfg: &AgentConfig) -> Result<Link, ConnectError> {
    let server = cfg.server.clone();
    let mut tls = (*cfg.tls).clone();
    // gRPC servers (grpc-go >= 1.67 among them) insist on ALPN h2.
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let dial = TlsDial {
        server: server.clone(),
        name: cfg.server_name.clone(),
        tls: TlsConnector::from(Arc::new(tls)),
    };
    // The scheme only fills the :scheme pseudo-header; TLS is done by `dial`.
    let endpoint = Endpoint::from_shared(format!("http://{server}"))
        .map_err(|source| ConnectError::Transport {
            server: server.clone(),
            source,
        })?
        .http2_keep_alive_interval(cfg.keepalive)
        .keep_alive_timeout(cfg.keepalive)
        .keep_alive_while_idle(true);
    let channel = endpoint
        .connect_with_connector(dial)
        .await
        .map_err(|source| ConnectError::Transport {
            server: server.clone(),
            source,
        })?;
    let mut client = AgentServiceClient::new(channel);

    let (tx, rx) = mpsc::channel(OUTBOUND_PACKETS);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let md = request.metadata_mut();
    md.insert("agentid", value(&cfg.agent_id, "agentID")?);
    md.insert(
        "agentidentifiers",
        value(&cfg.identifiers, "agentIdentifiers")?,
    );
    flow::announce(md, cfg.extensions, cfg.credit_window);
    if let Some(path) = &cfg.token_file {
        let token = std::fs::read_to_string(path).map_err(|source| ConnectError::Token {
            path: path.clone(),
            source,
        })?;
        let bearer = format!("Bearer {}", token.trim());
        md.insert("authorization", value(&bearer, "authorization")?);
    }
    let response = client
        .connect(request)
        .await
        .map_err(|status| ConnectError::Rpc {
            server: server.clone(),
            status,
        })?;
    let header = |key: &str| {
        response
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (server_id, count) = (header("serverid"), header("servercount"));
    let server_count = count.parse::<usize>().ok();
    let (announced, window) = flow::announced(response.metadata());
    let mut ext = cfg.extensions.both(announced);
    ext.credit &= window.is_some();
    if server_id.is_empty() || server_count.is_none() {
        tracing::warn!(%server, server_id, server_count = count, "the server sent no usable serverID/serverCount header; is it a Konnectivity server?");
    }
    Ok(Link {
        inbound: response.into_inner(),
        outbound: tx,
        server_id,
        server_count,
        ext,
        peer_window: window.unwrap_or(0),
        _client: client,
    })
}

fn value(
    s: &str,
    what: &'static str,
) -> Result<MetadataValue<tonic::metadata::Ascii>, ConnectError> {
    s.parse().map_err(|_| ConnectError::Metadata { what })
}
