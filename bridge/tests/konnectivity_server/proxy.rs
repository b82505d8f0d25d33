//! The gRPC egress frontend (`ProxyService.Proxy` over a unix socket) with
//! a fake dialer backed by a local echo server.

use std::net::SocketAddr;
use std::sync::Arc;

use sshbridge::egress::http_connect::Lifecycle;
use sshbridge::egress::{grpc, Dial, Dialed, EgressError, Target};
use sshbridge::konnectivity::proto::packet::Payload;
use sshbridge::konnectivity::proto::proxy_service_client::ProxyServiceClient;
use sshbridge::konnectivity::proto::Packet;
use sshbridge::path::DialError;
use tokio::net::{TcpStream, UnixListener};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::kit::{echo_server, pattern, within};

/// Dials the echo server for any port but 9, which is refused.
struct EchoDial(SocketAddr);

impl Dial for EchoDial {
    type Route = Target;

    fn route(&self, host: &str, port: u16) -> Result<Target, EgressError> {
        Target::route(host, port)
    }

    async fn dial(&self, to: Target) -> Result<Dialed, EgressError> {
        if to.port == 9 {
            return Err(EgressError::Dial(DialError::Refused {
                node: "node-a".into(),
                target: format!("{}:{}", to.host, to.port),
                reason: "connection refused".into(),
            }));
        }
        let stream = TcpStream::connect(self.0).await.expect("echo server");
        Ok(Dialed {
            stream: Box::new(stream),
            node: "node-a".into(),
        })
    }
}

type Client = ProxyServiceClient<tonic::transport::Channel>;

async fn start() -> (Client, CancellationToken, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("konnectivity.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let life = Lifecycle::default();
    let stop = life.stop_accepting.clone();
    let dialer = Arc::new(EchoDial(echo_server().await));
    tokio::spawn(grpc::serve_unix(listener, dialer, life));
    (sshbridge_sim::grpc::proxy_client(&sock), stop, dir)
}

/// Opens a Proxy stream: the sender of client packets and the server's stream.
async fn open(client: &mut Client) -> (mpsc::Sender<Packet>, tonic::Streaming<Packet>) {
    let (tx, rx) = mpsc::channel(16);
    let response = within("Proxy", client.proxy(ReceiverStream::new(rx)))
        .await
        .unwrap();
    (tx, response.into_inner())
}

async fn next(inbound: &mut tonic::Streaming<Packet>) -> Option<Payload> {
    within("packet from the frontend", inbound.message())
        .await
        .unwrap()
        .and_then(|p| p.payload)
}

#[tokio::test]
async fn grpc_frontend_dials_carries_data_and_closes() {
    let (mut client, _stop, _dir) = start().await;
    let (tx, mut inbound) = open(&mut client).await;
    tx.send(Packet::dial_request("127.0.0.1:8080", 42))
        .await
        .unwrap();
    match next(&mut inbound).await {
        Some(Payload::DialResponse(r)) => {
            assert_eq!((r.random, r.connect_id, r.error.as_str()), (42, 1, ""));
        }
        other => panic!("expected DIAL_RSP, got {other:?}"),
    }
    let sent = pattern(256 * 1024);
    for chunk in sent.chunks(16 * 1024) {
        tx.send(Packet::data(1, chunk.to_vec())).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        match next(&mut inbound).await {
            Some(Payload::Data(d)) => {
                assert_eq!(d.connect_id, 1);
                got.extend_from_slice(&d.data);
            }
            other => panic!("expected DATA, got {other:?}"),
        }
    }
    assert!(got == sent, "bytes changed on the way");
    tx.send(Packet::close_request(1)).await.unwrap();
    match next(&mut inbound).await {
        Some(Payload::CloseResponse(c)) => assert_eq!((c.connect_id, c.error.as_str()), (1, "")),
        other => panic!("expected CLOSE_RSP, got {other:?}"),
    }
    assert!(
        next(&mut inbound).await.is_none(),
        "the stream ends after CLOSE_RSP"
    );
}

#[tokio::test]
async fn grpc_frontend_reports_dial_errors_in_dial_rsp() {
    let (mut client, _stop, _dir) = start().await;
    let (tx, mut inbound) = open(&mut client).await;
    tx.send(Packet::dial_request("10.0.0.5:9", 7))
        .await
        .unwrap();
    match next(&mut inbound).await {
        Some(Payload::DialResponse(r)) => {
            assert_eq!((r.random, r.connect_id), (7, 0));
            assert!(
                r.error.contains("node-a") && r.error.contains("connection refused"),
                "{}",
                r.error
            );
        }
        other => panic!("expected DIAL_RSP, got {other:?}"),
    }
    let (tx, mut inbound) = open(&mut client).await;
    tx.send(Packet::dial_request("no-port", 8)).await.unwrap();
    match next(&mut inbound).await {
        Some(Payload::DialResponse(r)) => assert!(r.error.contains("host:port"), "{}", r.error),
        other => panic!("expected DIAL_RSP, got {other:?}"),
    }
}
