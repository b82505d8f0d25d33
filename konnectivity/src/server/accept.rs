//! Accepting agents: the accept loop, each connection's TLS handshake (a
//! task of its own, bounded by the handshake limit and ended by shutdown),
//! and the accepted connection as tonic serves it, with the peer's
//! certificates for the identity check.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::identity::AgentPeer;
use sshbridge_core::quickack::QuickAck;
use sshbridge_core::tasks::Tasks;

/// The accept loop's parts: each accepted connection's TLS handshake runs
/// as a task of its own in `tasks`, and ends when `stop` is cancelled.
pub(super) struct Accept {
    pub(super) acceptor: TlsAcceptor,
    pub(super) handshakes: sshbridge_core::handshake::HandshakeLimit,
    pub(super) tx: mpsc::Sender<io::Result<AgentConn>>,
    pub(super) stop: CancellationToken,
    pub(super) tasks: Tasks,
}

impl Accept {
    pub(super) async fn run(self, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = self.tx.closed() => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "Konnectivity agent accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, tx, handshakes) = (
                self.acceptor.clone(),
                self.tx.clone(),
                self.handshakes.clone(),
            );
            let stop = self.stop.clone();
            self.tasks
                .spawn("Konnectivity agent TLS handshake", async move {
                    let _ = tcp.set_nodelay(true);
                    let tls = tokio::select! {
                        _ = stop.cancelled() => return,
                        tls = handshakes.accept(&acceptor, QuickAck::new(tcp), peer) => tls,
                    };
                    if let Some(tls) = tls {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = tx.send(Ok(AgentConn { tls, peer })) => {}
                        }
                    }
                });
        }
    }
}

/// An accepted TLS connection from an agent.
pub(super) struct AgentConn {
    tls: TlsStream<QuickAck<TcpStream>>,
    peer: SocketAddr,
}

impl tonic::transport::server::Connected for AgentConn {
    type ConnectInfo = AgentPeer;
    /// The peer address and the client certificates rustls verified, so
    /// `connect` can check which node the agent may serve.
    fn connect_info(&self) -> AgentPeer {
        let certs = self
            .tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| Arc::new(c.iter().map(|d| d.clone().into_owned()).collect::<Vec<_>>()));
        AgentPeer {
            addr: self.peer,
            certs,
        }
    }
}

impl AsyncRead for AgentConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}
