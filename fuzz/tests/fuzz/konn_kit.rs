//! The real Konnectivity agent server on loopback (identity claimed, as
//! protocol tests need) and a raw agent stream to feed it packets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use rustls::ClientConfig;
use sshbridge_konnectivity::proto::agent_service_client::AgentServiceClient;
use sshbridge_konnectivity::proto::packet::Payload;
use sshbridge_konnectivity::proto::Packet;
use sshbridge_konnectivity::Hub;
use sshbridge_sim::agent_server::{konnectivity_node, AgentServer, Spec};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The agent server for node `node-a` (127.0.0.1), identity claimed.
pub struct Server {
    pub hub: Hub,
    inner: AgentServer,
    tls: Arc<ClientConfig>,
}

impl Server {
    pub async fn start() -> Result<Server> {
        let node = konnectivity_node("node-a", "127.0.0.1".parse()?);
        let inner =
            AgentServer::start(Spec::new(vec![node], "cp-fuzz", Duration::from_secs(1))).await?;
        Ok(Server {
            hub: inner.hub.clone(),
            tls: inner.pki.client_config(None)?,
            inner,
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
    let channel = server
        .inner
        .channel(server.tls.clone())
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
