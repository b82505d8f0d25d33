//! The test kit of `agent.rs`: a minimal Konnectivity server (the generated
//! `AgentService` over tokio-rustls on 127.0.0.1:0) and echo targets.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use sshbridge::agent::{AgentConfig, AgentHandle};
use sshbridge::konnectivity::proto::agent_service_server::{AgentService, AgentServiceServer};
use sshbridge::konnectivity::proto::packet::Payload;
use sshbridge::konnectivity::proto::Packet;
use sshbridge_sim::pki::Pki;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};

pub const WAIT: Duration = Duration::from_secs(10);

/// One agent stream as the test server sees it.
pub struct Sess {
    pub agent_id: String,
    pub identifiers: String,
    pub inbound: Streaming<Packet>,
    pub out: mpsc::Sender<Result<Packet, Status>>,
}

impl Sess {
    pub async fn send(&self, p: Packet) {
        self.out.send(Ok(p)).await.expect("stream open");
    }

    /// The next packet from the agent, within `WAIT`.
    pub async fn recv(&mut self) -> Payload {
        let p = tokio::time::timeout(WAIT, self.inbound.message())
            .await
            .expect("agent answered in time")
            .expect("stream healthy")
            .expect("stream open");
        p.payload.expect("packet has a payload")
    }

    /// Dials `addr` with `random` and returns (connectID, error).
    pub async fn dial(&mut self, addr: SocketAddr, random: i64) -> (i64, String) {
        self.send(Packet::dial_request(addr.to_string(), random))
            .await;
        match self.recv().await {
            Payload::DialResponse(r) => {
                assert_eq!(r.random, random, "DIAL_RSP echoes the random");
                (r.connect_id, r.error)
            }
            other => panic!("expected DIAL_RSP, got {other:?}"),
        }
    }

    /// Sends `data` on `id` and reads the echo back, checking every chunk.
    pub async fn round_trip(&mut self, id: i64, data: &[u8]) {
        for chunk in data.chunks(50_000) {
            self.send(Packet::data(id, chunk.to_vec())).await;
        }
        let mut got = Vec::new();
        while got.len() < data.len() {
            match self.recv().await {
                Payload::Data(d) => {
                    assert_eq!(d.connect_id, id);
                    assert!(d.data.len() <= 32 * 1024, "DATA chunk of {}", d.data.len());
                    got.extend_from_slice(&d.data);
                }
                other => panic!("expected DATA, got {other:?}"),
            }
        }
        assert!(got == data, "echoed bytes differ");
    }
}

struct Svc(mpsc::Sender<Sess>);

#[tonic::async_trait]
impl AgentService for Svc {
    type ConnectStream = ReceiverStream<Result<Packet, Status>>;

    async fn connect(
        &self,
        req: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let get = |k: &str| {
            let v = req.metadata().get(k);
            v.and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
        };
        let (agent_id, identifiers) = (get("agentid"), get("agentidentifiers"));
        let (tx, rx) = mpsc::channel(4096);
        let sess = Sess {
            agent_id,
            identifiers,
            inbound: req.into_inner(),
            out: tx,
        };
        self.0
            .send(sess)
            .await
            .map_err(|_| Status::unavailable("test over"))?;
        let mut resp = Response::new(ReceiverStream::new(rx));
        resp.metadata_mut()
            .insert("serverid", "test-server".parse().unwrap());
        resp.metadata_mut()
            .insert("servercount", "1".parse().unwrap());
        Ok(resp)
    }
}

/// A server-side TLS connection tonic can serve.
struct Conn(TlsStream<TcpStream>);

impl Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub pki: Pki,
    sessions: mpsc::Receiver<Sess>,
    /// Raw sockets of accepted connections, to cut them from under tonic.
    fds: Arc<Mutex<Vec<i32>>>,
    stop: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        let pki = Pki::new("agent-test-ca").unwrap();
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let pair = pki.issue_server(&[localhost], &[]).unwrap();
        let mut tls = (*pki.server_config(&pair).unwrap()).clone();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (conn_tx, conn_rx) = mpsc::channel::<io::Result<Conn>>(16);
        let fds = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let fds2 = fds.clone();
        let stop2 = stop.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => r.unwrap(),
                    _ = stop2.cancelled() => return,
                };
                fds2.lock().unwrap().push(tcp.as_raw_fd());
                let (acceptor, conn_tx) = (acceptor.clone(), conn_tx.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = conn_tx.send(Ok(Conn(tls))).await;
                    }
                });
            }
        });
        let (sess_tx, sessions) = mpsc::channel(16);
        let stop3 = stop.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AgentServiceServer::new(Svc(sess_tx)))
                .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), stop3.cancelled_owned())
                .await;
        });
        TestServer {
            addr,
            pki,
            sessions,
            fds,
            stop,
        }
    }

    pub fn config(&self) -> AgentConfig {
        let tls = self.pki.client_config(None).unwrap();
        let mut cfg = AgentConfig::new(self.addr.to_string(), tls, "agent-1").unwrap();
        cfg.identifiers = "host=node-a&ipv4=127.0.0.1".into();
        cfg.dial_timeout = Duration::from_secs(1);
        cfg.backoff.initial = Duration::from_millis(50);
        cfg.backoff.max = Duration::from_millis(200);
        cfg
    }

    pub async fn next_session(&mut self) -> Sess {
        tokio::time::timeout(WAIT, self.sessions.recv())
            .await
            .expect("agent connected in time")
            .expect("server running")
    }

    /// Cuts every accepted TCP connection (both directions), as a server
    /// that died would.
    pub fn cut_connections(&self) {
        for fd in self.fds.lock().unwrap().drain(..) {
            // The fds belong to live sockets of this test's server.
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
    }
}

/// Echoes every connection; returns its address.
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

pub async fn wait_connected(h: &AgentHandle, want: bool) {
    let mut rx = h.connected();
    tokio::time::timeout(WAIT, rx.wait_for(|c| *c == want))
        .await
        .expect("connection state changed in time")
        .expect("agent alive");
}
