//! Interop with kube-apiserver: what its clients send, and (with the
//! binaries from scripts/k8s-harness) a real kube-apiserver v1.20.2 whose
//! `cluster` egress runs through the bridge in both proxy protocols.

use sshbridge::konnectivity::proto::packet::Payload;
use sshbridge::konnectivity::proto::Packet;
use sshbridge_tests::apiserver::{Answer, RawProxyStream};

use crate::support::{konnectivity_setup, within};

/// grpc-go (kube-apiserver's konnectivity-client, upstream's tools) sends
/// the unix socket's path as `:authority`; other clients send nothing or
/// `localhost`. Each must get a working tunnel, not an RST_STREAM (the
/// vendored h2 patch, vendor/README.md).
#[tokio::test]
async fn grpc_egress_serves_the_authorities_real_clients_send() -> anyhow::Result<()> {
    within(90, async {
        let s = konnectivity_setup(1, &[], &[], |_| {}).await?;
        let uds = s.bridge.grpc_uds().expect("grpc_uds configured");
        let echo = s.cluster.nodes[0].echo.addr().to_string();
        let path = uds.to_str().expect("utf-8 socket path").to_string();
        for authority in [path.as_str(), "", "localhost"] {
            let random = 4242;
            let mut stream =
                RawProxyStream::open(uds, authority, &Packet::dial_request(&echo, random)).await?;
            let connect_id = match stream.next().await? {
                Answer::Packet(Packet {
                    payload: Some(Payload::DialResponse(r)),
                    ..
                }) if r.random == random && r.error.is_empty() => r.connect_id,
                other => panic!("authority {authority:?}: expected a good DIAL_RSP, got {other:?}"),
            };
            let msg = format!("through :authority {authority:?}");
            stream
                .send(&Packet::data(connect_id, msg.as_bytes()))
                .await?;
            let mut back = Vec::new();
            while back.len() < msg.len() {
                match stream.next().await? {
                    Answer::Packet(Packet {
                        payload: Some(Payload::Data(d)),
                        ..
                    }) => back.extend_from_slice(&d.data),
                    other => panic!("authority {authority:?}: expected the echo, got {other:?}"),
                }
            }
            assert_eq!(back, msg.as_bytes(), "authority {authority:?}");
        }
        Ok(())
    })
    .await
}
