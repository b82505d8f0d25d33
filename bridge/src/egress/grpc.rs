//! Konnectivity gRPC egress (`ProxyService.Proxy`) over a unix socket, as
//! kube-apiserver uses it with `proxyProtocol: GRPC`: one gRPC stream per
//! dial.
//!
//! The first packet is DIAL_REQ{address, random}. The target is routed and
//! dialed through the same [`Dial`] as HTTP CONNECT, then the answer is
//! DIAL_RSP{random, connectID 1} (or DIAL_RSP{random, error} with the
//! reason the CONNECT frontend would put under its status). DATA flows both
//! ways. CLOSE_REQ from the client is answered with CLOSE_RSP; when the
//! target closes, CLOSE_RSP is sent unasked (with the error, if it failed);
//! either way the gRPC stream then ends. DIAL_CLS, or the client's stream
//! ending, before the answer abandons the dial.
//!
//! Each dial is its own gRPC stream with HTTP/2 flow control, so a slow
//! client holds back only its own target: the `credit` extension is not
//! needed here and not offered.
//!
//! A client that announces `half-close` in the `sshbridge-ext` metadata
//! (sshbridge's own clients: `sim::grpc`, `sshbridge agent` tooling) gets
//! it back in the response headers, and then HALF_CLOSE works both ways as
//! on the agent stream (docs/konnectivity.md): the client's HALF_CLOSE
//! becomes `shutdown(SHUT_WR)` on the target, the target's EOF becomes
//! HALF_CLOSE, and when both directions ended the server sends CLOSE_RSP
//! and ends the stream. kube-apiserver announces nothing and sees exactly
//! the behaviour above.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::http_connect::Lifecycle;
use super::{Dial, Dialed};
use crate::konnectivity::flow::{self, Extensions};
use crate::konnectivity::proto::packet::Payload;
use crate::konnectivity::proto::proxy_service_server::{ProxyService, ProxyServiceServer};
use crate::konnectivity::proto::Packet;

/// The connectID of the one connection on each stream.
const CONNECT_ID: i64 = 1;
/// Largest DATA payload sent per packet.
const CHUNK: usize = 32 * 1024;

/// Serves `ProxyService` on `listener` until `stop_accepting` is
/// cancelled and the open streams have ended (each ends at once when
/// `abort` is cancelled). Stream tasks are tracked by `life.tracker`.
pub async fn serve_unix<D: Dial>(listener: UnixListener, dialer: Arc<D>, life: Lifecycle) {
    serve_unix_bounded(listener, dialer, life, 4096).await
}

/// [`serve_unix`] with at most `max_streams` HTTP/2 streams (dials) per
/// connection (`[egress] grpc_max_concurrent_streams`).
pub async fn serve_unix_bounded<D: Dial>(
    listener: UnixListener,
    dialer: Arc<D>,
    life: Lifecycle,
    max_streams: u32,
) {
    let stop = life.stop_accepting.clone();
    let svc = ProxySvc { dialer, life };
    let served = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(max_streams))
        .add_service(ProxyServiceServer::new(svc))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop.cancelled_owned())
        .await;
    if let Err(e) = served {
        warn!(error = %e, "gRPC egress frontend stopped with an error");
    }
}

/// Splits `host:port` or `[v6]:port` into a bare host and a port.
pub fn parse_address(address: &str) -> Option<(String, u16)> {
    address
        .parse::<sshbridge_core::HostPort>()
        .ok()
        .map(sshbridge_core::HostPort::into_parts)
}

struct ProxySvc<D> {
    dialer: Arc<D>,
    life: Lifecycle,
}

#[tonic::async_trait]
impl<D: Dial> ProxyService for ProxySvc<D> {
    type ProxyStream = ReceiverStream<Result<Packet, Status>>;

    async fn proxy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::ProxyStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let (dialer, abort) = (self.dialer.clone(), self.life.abort.clone());
        let ext = Extensions {
            half_close: true,
            credit: false,
        }
        .both(flow::announced(request.metadata()).0);
        let inbound = request.into_inner();
        self.life.spawn(async move {
            serve_stream(inbound, tx, dialer.as_ref(), abort, ext.half_close).await
        });
        let mut response = Response::new(ReceiverStream::new(rx));
        flow::announce(response.metadata_mut(), ext, 0);
        Ok(response)
    }
}

type Out = mpsc::Sender<Result<Packet, Status>>;

async fn serve_stream<D: Dial>(
    mut inbound: Streaming<Packet>,
    tx: Out,
    dialer: &D,
    abort: CancellationToken,
    half_close: bool,
) {
    let first = tokio::select! {
        _ = abort.cancelled() => return,
        first = inbound.message() => first,
    };
    let req = match first {
        Ok(Some(Packet {
            payload: Some(Payload::DialRequest(req)),
            ..
        })) => req,
        Ok(Some(_)) => {
            let status = Status::invalid_argument("the first packet of a stream must be DIAL_REQ");
            let _ = tx.send(Err(status)).await;
            return;
        }
        Ok(None) | Err(_) => return,
    };
    let random = req.random;
    let Some((host, port)) = parse_address(&req.address) else {
        let error = format!(
            "DIAL_REQ address {:?} is not host:port; use [v6]:port for IPv6",
            req.address
        );
        let _ = tx.send(Ok(Packet::dial_response(random, 0, error))).await;
        return;
    };
    let dialed = match dialer.route(&host, port) {
        Ok(route) => tokio::select! {
            _ = abort.cancelled() => Err("the bridge is shutting down".to_string()),
            dialed = dialer.dial(route) => dialed.map_err(|e| e.to_string()),
            _ = abandoned(&mut inbound) => {
                return debug!(target = %req.address, "gRPC dial abandoned by the client");
            }
        },
        Err(e) => Err(e.to_string()),
    };
    let Dialed { stream, node } = match dialed {
        Ok(d) => d,
        Err(error) => {
            warn!(target = %req.address, %error, "gRPC egress dial failed");
            let _ = tx.send(Ok(Packet::dial_response(random, 0, error))).await;
            return;
        }
    };
    if tx
        .send(Ok(Packet::dial_response(random, CONNECT_ID, "")))
        .await
        .is_err()
    {
        return;
    }
    debug!(target = %req.address, %node, "gRPC stream open");
    let (mut rd, mut wr) = tokio::io::split(stream);
    // `Some(None)`: this direction ended cleanly (half-close); `Some(Some)`
    // or a return: the connection ends.
    let up = async {
        loop {
            match inbound.message().await {
                Ok(Some(packet)) => match packet.payload {
                    Some(Payload::Data(d)) if wr.write_all(&d.data).await.is_err() => {
                        return Up::Failed("writing to the target failed".to_string());
                    }
                    Some(Payload::HalfClose(_)) if half_close => {
                        let _ = wr.shutdown().await;
                        return Up::HalfClosed(Box::new(inbound));
                    }
                    Some(Payload::CloseRequest(_)) => return Up::Closed,
                    _ => {}
                },
                Ok(None) | Err(_) => return Up::Failed("client stream ended".to_string()),
            }
        }
    };
    let down_tx = tx.clone();
    let down = async move {
        // Starts small: most streams carry a few KiB (core's `copy`).
        let mut buf = sshbridge_core::copy::Growing::new(CHUNK);
        loop {
            match buf.read(&mut rd).await.map(<[u8]>::len) {
                Ok(0) if half_close => {
                    let _ = down_tx.send(Ok(Packet::half_close(CONNECT_ID))).await;
                    return None;
                }
                Ok(0) => return Some(String::new()),
                Ok(_) => {
                    let packet = Packet::data(CONNECT_ID, buf.last().to_vec());
                    if down_tx.send(Ok(packet)).await.is_err() {
                        return Some("client went away".to_string());
                    }
                }
                Err(e) => return Some(e.to_string()),
            }
        }
    };
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (None, false);
    let close_error = loop {
        tokio::select! {
            _ = abort.cancelled() => break "cut at the end of the drain grace period".to_string(),
            up = &mut up, if up_done.is_none() => match up {
                Up::Closed => break String::new(),
                Up::Failed(reason) => return info!(target = %req.address, %node, %reason, "gRPC stream ended"),
                Up::HalfClosed(rest) => {
                    if down_done {
                        break String::new();
                    }
                    up_done = Some(*rest);
                }
            },
            // After the client's HALF_CLOSE only CLOSE_REQ or the stream's
            // end can come from it.
            _ = async { abandoned(up_done.as_mut().expect("guarded")).await }, if up_done.is_some() && !down_done => {
                break String::new();
            }
            down = &mut down, if !down_done => match down {
                Some(error) => break error,
                None if up_done.is_some() => break String::new(),
                None => down_done = true,
            },
        }
    };
    let _ = tx
        .send(Ok(Packet::close_response(CONNECT_ID, close_error)))
        .await;
    debug!(target = %req.address, %node, "gRPC stream closed");
}

/// How the client's direction of a stream ended.
enum Up {
    /// CLOSE_REQ.
    Closed,
    /// HALF_CLOSE; the rest of the client's stream.
    HalfClosed(Box<Streaming<Packet>>),
    /// The client's stream broke, or writing to the target failed.
    Failed(String),
}

/// Resolves when the client gives up on its dial: DIAL_CLS, or its stream ends.
async fn abandoned(inbound: &mut Streaming<Packet>) {
    loop {
        match inbound.message().await {
            Ok(Some(Packet {
                payload: Some(Payload::CloseDial(_)),
                ..
            }))
            | Ok(None)
            | Err(_) => return,
            Ok(Some(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_address;

    #[test]
    fn addresses_split_into_host_and_port() {
        let split = |a| parse_address(a);
        assert_eq!(split("10.0.0.5:10250"), Some(("10.0.0.5".into(), 10250)));
        assert_eq!(split("node-a:22"), Some(("node-a".into(), 22)));
        assert_eq!(split("[fd00::5]:443"), Some(("fd00::5".into(), 443)));
        assert_eq!(split("fd00::5:443"), None);
        assert_eq!(split("node-a"), None);
        assert_eq!(split(":80"), None);
        assert_eq!(split("a:99999"), None);
    }
}
