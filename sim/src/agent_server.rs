//! The real Konnectivity agent server (`sshbridge_konnectivity::server`)
//! on loopback with a throwaway PKI, and a TLS channel to it for test
//! agents. Protocol tests and fuzz targets drive it with raw packets.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use sshbridge_config::{AgentIdentity, Node, Route};
use sshbridge_core::metrics::Registry;
use sshbridge_konnectivity::identity::Guard;
use sshbridge_konnectivity::{server, Hub, Options};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::pki::{Pki, PkiError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Issuing or writing its certificates failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Binding the listener or creating the temporary directory failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The server's TLS configuration was refused.
    #[error(transparent)]
    Tls(#[from] sshbridge_core::tls::TlsError),
}

/// How to start an [`AgentServer`].
pub struct Spec {
    /// The nodes the hub serves.
    pub nodes: Vec<Node>,
    /// Agents must present a client certificate of the PKI, and identity
    /// is proven by it; otherwise identity is claimed.
    pub mtls: bool,
    /// `serverID` announced to agents.
    pub server_id: String,
    /// `serverCount` announced to agents.
    pub server_count: u32,
    /// Per-connection buffer limit of the hub.
    pub max_conn_buffer: usize,
    /// How long a connection may stall before the hub closes it.
    pub stall_timeout: Duration,
    /// How long the hub waits for an agent's DIAL_RSP.
    pub dial_timeout: Duration,
}

impl Spec {
    /// Claimed identity, one server, default limits, 1 s stall timeout.
    pub fn new(nodes: Vec<Node>, server_id: &str, dial_timeout: Duration) -> Self {
        Spec {
            nodes,
            mtls: false,
            server_id: server_id.to_owned(),
            server_count: 1,
            max_conn_buffer: Options::DEFAULT_MAX_CONN_BUFFER,
            stall_timeout: Duration::from_secs(1),
            dial_timeout,
        }
    }
}

/// A node routed over Konnectivity, at `addr`.
pub fn konnectivity_node(name: &str, addr: std::net::IpAddr) -> Node {
    Node {
        route: Route::Konnectivity,
        ..Node::new(name, addr, vec![])
    }
}

/// The agent server on 127.0.0.1; it stops when dropped.
pub struct AgentServer {
    /// The hub behind the server.
    pub hub: Hub,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The PKI that issued its certificate; issue agents' certificates
    /// from it.
    pub pki: Pki,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for AgentServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl AgentServer {
    /// Starts the server on a port the OS picks.
    pub async fn start(spec: Spec) -> Result<AgentServer, StartError> {
        let pki = Pki::new(&format!("{}-ca", spec.server_id))?;
        let dir = tempfile::tempdir()?;
        let ca = pki.write_ca(dir.path())?;
        let (cert, key) = pki
            .issue_server(&["127.0.0.1".parse().expect("an address")], &[])?
            .write_to(dir.path(), "server")?;
        let client_ca = spec.mtls.then_some(ca);
        let tls = server::tls_config(&cert, &key, client_ca.as_deref())?;
        let identity = if spec.mtls {
            AgentIdentity::Proven
        } else {
            AgentIdentity::Claimed
        };
        let options = Options {
            server_id: spec.server_id,
            server_count: spec.server_count,
            max_conn_buffer: spec.max_conn_buffer,
            stall_timeout: spec.stall_timeout,
            dial_timeout: spec.dial_timeout,
            identity: Guard::new(identity, &Registry::new()),
        };
        let hub = Hub::new(options, &spec.nodes);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        tokio::spawn(server::serve(listener, tls, hub.clone(), stop.clone()));
        Ok(AgentServer {
            hub,
            addr,
            pki,
            stop,
            _dir: dir,
        })
    }

    /// An HTTP/2 channel to the server over TLS with `tls` (e.g.
    /// `pki.client_config(Some(&agent_cert))`), for an agent's
    /// `AgentServiceClient`.
    pub async fn channel(
        &self,
        tls: Arc<ClientConfig>,
    ) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_static("http://127.0.0.1:1")
            .connect_with_connector(TlsDial {
                addr: self.addr,
                tls,
            })
            .await
    }
}

/// Dials the server over TLS from a fixed address, for tonic.
#[derive(Clone)]
struct TlsDial {
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
}

type Io = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl Service<Uri> for TlsDial {
    type Response = Io;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Io>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (addr, tls) = (self.addr, self.tls.clone());
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::IpAddress(addr.ip().into());
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    }
}
