//! An apiserver-like Konnectivity gRPC client for the bridge's
//! `[egress] grpc_uds`: one `ProxyService.Proxy` stream per dial, as
//! kube-apiserver's `proxyProtocol: GRPC` uses it. A dial that succeeds is
//! handed out as a plain byte [`Stream`], so the same checks (kubelet GET,
//! echo, checksums) run over both egress frontends.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use sshbridge::konnectivity::proto::packet::Payload;
use sshbridge::konnectivity::proto::proxy_service_client::ProxyServiceClient;
use sshbridge::konnectivity::proto::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::client::Stream;

/// Bound on opening a stream and on the dial's answer.
const STEP: Duration = Duration::from_secs(15);
/// DATA payload per packet, like upstream's client.
const CHUNK: usize = 32 * 1024;

/// A gRPC client of one bridge's `grpc_uds`. Cheap to clone; every dial is
/// its own HTTP/2 stream on a shared connection (re-established when the
/// bridge restarts).
#[derive(Clone)]
pub struct GrpcEgress {
    client: ProxyServiceClient<Channel>,
}

/// How a dial ended: the tunneled stream, or DIAL_RSP's error text.
pub type GrpcDial = Result<Stream, String>;

impl GrpcEgress {
    /// A client of the socket at `path` (connects at the first dial).
    pub fn new(path: &Path) -> Self {
        GrpcEgress {
            client: sshbridge_sim::grpc::proxy_client(path),
        }
    }

    /// DIAL_REQ for `target` (`host:port`) and its DIAL_RSP. `Ok(Err(e))`
    /// is the bridge's refusal with its reason; `Err` is a transport or
    /// protocol failure.
    pub async fn dial(&self, target: &str) -> anyhow::Result<GrpcDial> {
        let (tx, rx) = mpsc::channel(64);
        let random = i64::from(rand::random::<u32>()) + 1;
        tx.send(Packet::dial_request(target, random))
            .await
            .context("queueing DIAL_REQ")?;
        let mut client = self.client.clone();
        let exchange = async {
            let mut inbound = client
                .proxy(ReceiverStream::new(rx))
                .await
                .context("opening ProxyService.Proxy")?
                .into_inner();
            let first = inbound.message().await.context("reading DIAL_RSP")?;
            Ok::<_, anyhow::Error>((first, inbound))
        };
        let (first, inbound) = tokio::time::timeout(STEP, exchange)
            .await
            .with_context(|| format!("no DIAL_RSP for {target} within {STEP:?}"))??;
        let rsp = match first.and_then(|p| p.payload) {
            Some(Payload::DialResponse(r)) => r,
            other => bail!("expected DIAL_RSP for {target}, got {other:?}"),
        };
        if rsp.random != random {
            bail!("DIAL_RSP carries random {} for {random}", rsp.random);
        }
        if !rsp.error.is_empty() {
            return Ok(Err(rsp.error));
        }
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        tokio::spawn(pump(theirs, tx, inbound, rsp.connect_id));
        Ok(Ok(Box::new(ours)))
    }
}

/// Moves bytes between the test's end of a duplex pipe and the gRPC
/// stream: DATA both ways; the test closing its end sends CLOSE_REQ; the
/// bridge's CLOSE_RSP or the end of the stream closes the test's end.
async fn pump(
    pipe: tokio::io::DuplexStream,
    tx: mpsc::Sender<Packet>,
    mut inbound: tonic::Streaming<Packet>,
    connect_id: i64,
) {
    let (mut r, mut w) = tokio::io::split(pipe);
    let done = tokio_util::sync::CancellationToken::new();
    let outbound = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = tokio::select! {
                _ = done.cancelled() => return,
                n = r.read(&mut buf) => n,
            };
            match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Packet::data(connect_id, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Packet::close_request(connect_id)).await;
        // Keep the request stream open until CLOSE_RSP (or the end) arrives.
        done.cancelled().await;
    };
    let inbound = async {
        while let Ok(Some(packet)) = inbound.message().await {
            let data = match packet.payload {
                Some(Payload::Data(d)) => d.data,
                Some(Payload::CloseResponse(_)) => break,
                _ => continue,
            };
            if w.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
        done.cancel();
    };
    tokio::join!(outbound, inbound);
}
