//! The real Konnectivity agent server on loopback (identity claimed, as
//! protocol tests need) and a raw agent stream to feed it packets.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use sshbridge_config::{AgentIdentity, Node, Route};
use sshbridge_core::metrics::Registry;
use sshbridge_konnectivity::identity::Guard;
use sshbridge_konnectivity::proto::agent_service_client::AgentServiceClient;
use sshbridge_konnectivity::proto::packet::Payload;
use sshbridge_konnectivity::proto::Packet;
use sshbridge_konnectivity::{server, Hub, Options};
use sshbridge_sim::pki::Pki;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::Service;
use tonic::transport::{Endpoint, Uri};

/// The agent server for node `node-a` (127.0.0.1).
pub struct Server {
    pub hub: Hub,
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Server {
    pub async fn start() -> Result<Server> {
        let pki = Pki::new("fuzz-ca")?;
        let dir = tempfile::tempdir()?;
        let (cert, key) = pki
            .issue_server(&["127.0.0.1".parse()?], &[])?
            .write_to(dir.path(), "server")?;
        let tls = server::tls_config(&cert, &key, None)?;
        let options = Options {
            server_id: "cp-fuzz".into(),
            server_count: 1,
            max_conn_buffer: Options::DEFAULT_MAX_CONN_BUFFER,
            stall_timeout: Duration::from_secs(1),
            dial_timeout: Duration::from_secs(1),
            identity: Guard::new(AgentIdentity::Claimed, &Registry::new()),
        };
        let node = Node {
            route: Route::Konnectivity,
            ..Node::new("node-a", "127.0.0.1".parse()?, vec![])
        };
        let hub = Hub::new(options, &[node]);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        tokio::spawn(server::serve(listener, tls, hub.clone(), stop.clone()));
        Ok(Server {
            hub,
            addr,
            tls: pki.client_config(None)?,
            stop,
            _dir: dir,
        })
    }
}

/// Dials the server over TLS, for tonic.
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

/// One agent stream: packets go out through `tx`; a task reads what the
/// server sends and keeps the random of its last DIAL_REQ.
pub struct RawAgent {
    pub tx: mpsc::Sender<Packet>,
    pub last_random: Arc<AtomicI64>,
    reader: tokio::task::JoinHandle<()>,
}

impl RawAgent {
    /// Ends the stream.
    pub fn close(self) {
        self.reader.abort();
        drop(self.tx);
    }
}

pub async fn connect_agent(server: &Server, id: &str) -> Result<RawAgent> {
    let channel = Endpoint::from_static("http://127.0.0.1:1")
        .connect_with_connector(TlsDial {
            addr: server.addr,
            tls: server.tls.clone(),
        })
        .await
        .context("connect to the agent server")?;
    let (tx, rx) = mpsc::channel(256);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.metadata_mut().append("agentid", id.parse()?);
    request
        .metadata_mut()
        .insert("agentidentifiers", "host=node-a".parse()?);
    let response = AgentServiceClient::new(channel)
        .connect(request)
        .await
        .context("AgentService.Connect")?;
    let mut inbound = response.into_inner();
    let last_random = Arc::new(AtomicI64::new(0));
    let seen = last_random.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(p)) = inbound.message().await {
            if let Some(Payload::DialRequest(r)) = &p.payload {
                seen.store(r.random, Ordering::SeqCst);
            }
        }
    });
    Ok(RawAgent {
        tx,
        last_random,
        reader,
    })
}

/// A TCP echo server on loopback.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}
