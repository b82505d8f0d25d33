//! A Konnectivity agent server on loopback, a minimal scripted agent over
//! tonic + tokio-rustls, and TCP echo / firehose targets.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use sshbridge::konnectivity::proto::agent_service_client::AgentServiceClient;
use sshbridge::konnectivity::proto::packet::Payload;
use sshbridge::konnectivity::proto::Packet;
use sshbridge::konnectivity::Hub;
use sshbridge_config::Node;
use sshbridge_sim::agent_server::{konnectivity_node, AgentServer, Spec};
use sshbridge_sim::pki::CertPair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;

/// Bounds every await of the tests.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

pub fn node(name: &str, addr: &str) -> Node {
    konnectivity_node(name, addr.parse().unwrap())
}

/// The agent server with node-a's client certificate.
pub struct Bridge {
    pub hub: Hub,
    pub client: CertPair,
    server: AgentServer,
}

impl Bridge {
    /// Starts the server for nodes `node-a` (127.0.0.1) and `node-b`
    /// (10.0.0.6); with `mtls`, agents need a client certificate and
    /// identity is proven ([`Bridge::client`] is node-a's certificate);
    /// without, identity is claimed, as these protocol tests need.
    pub async fn start(mtls: bool, max_conn_buffer: usize) -> Result<Bridge> {
        let nodes = vec![node("node-a", "127.0.0.1"), node("node-b", "10.0.0.6")];
        let server = AgentServer::start(Spec {
            mtls,
            server_count: 3,
            max_conn_buffer,
            ..Spec::new(nodes, "cp-test", Duration::from_secs(10))
        })
        .await?;
        Ok(Bridge {
            hub: server.hub.clone(),
            client: server.pki.issue_node_client("node-a")?,
            server,
        })
    }

    /// Waits until `node` has `n` live agents.
    pub async fn wait_live(&self, node: &str, n: usize) {
        let mut live = self.hub.subscribe(node);
        within("agent count", live.wait_for(|v| *v == n))
            .await
            .expect("hub alive");
    }
}

/// How the test agent answers DIAL_REQ.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Dial the address for real.
    Dial,
    /// Answer with this error.
    Fail(String),
    /// Never answer.
    Hold,
}

/// A scripted Konnectivity agent.
pub struct TestAgent {
    /// The server's response headers.
    pub headers: MetadataMap,
    /// Every non-DATA packet the server sent, in order.
    pub seen: mpsc::UnboundedReceiver<Packet>,
    /// Packets to the server; dropping it (with the task) ends the stream.
    pub tx: mpsc::Sender<Packet>,
    task: tokio::task::JoinHandle<()>,
}

impl TestAgent {
    /// Kills the agent: its stream goes away without a goodbye.
    pub fn kill(self) {
        self.task.abort();
    }

    /// The next non-DATA packet from the server.
    pub async fn next_seen(&mut self) -> Packet {
        within("packet from server", self.seen.recv())
            .await
            .expect("agent alive")
    }
}

/// Connects an agent with the given metadata. `cert`: present the
/// bridge's client certificate.
pub async fn connect_agent(
    bridge: &Bridge,
    agent_ids: &[&str],
    identifiers: &str,
    cert: bool,
    answer: Answer,
) -> Result<TestAgent> {
    connect_agent_with(bridge, agent_ids, identifiers, cert, &[], answer).await
}

/// [`connect_agent`] that also sends the metadata `extra` (key, value).
pub async fn connect_agent_with(
    bridge: &Bridge,
    agent_ids: &[&str],
    identifiers: &str,
    cert: bool,
    extra: &[(&'static str, &str)],
    answer: Answer,
) -> Result<TestAgent> {
    let identity = cert.then_some(&bridge.client);
    let tls = bridge.server.pki.client_config(identity)?;
    let channel = bridge
        .server
        .channel(tls)
        .await
        .context("connect to the agent server")?;
    let (tx, rx) = mpsc::channel(64);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    for id in agent_ids {
        request.metadata_mut().append("agentid", id.parse()?);
    }
    request
        .metadata_mut()
        .insert("agentidentifiers", identifiers.parse()?);
    for (key, value) in extra {
        request.metadata_mut().append(*key, value.parse()?);
    }
    let response = AgentServiceClient::new(channel)
        .connect(request)
        .await
        .context("AgentService.Connect")?;
    let headers = response.metadata().clone();
    let inbound = response.into_inner();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let task = tokio::spawn(run_agent(inbound, tx.clone(), seen_tx, answer));
    Ok(TestAgent {
        headers,
        seen,
        tx,
        task,
    })
}

async fn run_agent(
    mut inbound: tonic::Streaming<Packet>,
    tx: mpsc::Sender<Packet>,
    seen: mpsc::UnboundedSender<Packet>,
    answer: Answer,
) {
    let mut conns: HashMap<i64, mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
    let mut next_id = 1;
    while let Ok(Some(packet)) = inbound.message().await {
        match &packet.payload {
            Some(Payload::DialRequest(req)) => match &answer {
                Answer::Fail(e) => {
                    let _ = tx.send(Packet::dial_response(req.random, 0, e)).await;
                }
                Answer::Hold => {}
                Answer::Dial => {
                    let Ok(target) = TcpStream::connect(&req.address).await else {
                        let _ = tx
                            .send(Packet::dial_response(req.random, 0, "connection refused"))
                            .await;
                        continue;
                    };
                    let id = next_id;
                    next_id += 1;
                    let (data_tx, data_rx) = mpsc::unbounded_channel();
                    conns.insert(id, data_tx);
                    let _ = tx.send(Packet::dial_response(req.random, id, "")).await;
                    tokio::spawn(pump(id, target, data_rx, tx.clone()));
                }
            },
            Some(Payload::Data(d)) => {
                if let Some(c) = conns.get(&d.connect_id) {
                    let _ = c.send(d.data.clone());
                }
            }
            Some(Payload::CloseRequest(c)) => {
                // Dropping the sender ends the pump, which closes the target.
                conns.remove(&c.connect_id);
                let _ = tx.send(Packet::close_response(c.connect_id, "")).await;
            }
            _ => {}
        }
        if !matches!(packet.payload, Some(Payload::Data(_))) {
            let _ = seen.send(packet);
        }
    }
}

/// Copies between a target and the agent stream for one connection.
async fn pump(
    id: i64,
    target: TcpStream,
    mut from_server: mpsc::UnboundedReceiver<Vec<u8>>,
    tx: mpsc::Sender<Packet>,
) {
    let (mut rd, mut wr) = target.into_split();
    let up = async {
        while let Some(data) = from_server.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 || tx.send(Packet::data(id, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
        let _ = tx.send(Packet::close_response(id, "")).await;
    };
    tokio::select! { _ = up => {}, _ = down => {} }
}

/// A TCP echo server on loopback.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
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

/// A TCP server that sends without end to whoever connects.
pub async fn firehose_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![b'x'; 64 * 1024];
                while s.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    addr
}

/// `len` bytes of a pattern that catches reordering and loss.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}
