//! Version skew between the bridge's Konnectivity server and agents one
//! minor release apart (docs/upgrade.md): metadata and packet fields this
//! version does not know are ignored, never fatal.

#[path = "konnectivity_server/kit.rs"]
#[allow(dead_code)]
mod kit;

use kit::{connect_agent_with, echo_server, within, Answer, Bridge};
use prost::Message;
use sshbridge::konnectivity::proto::packet::Payload;
use sshbridge::konnectivity::proto::{DialRequest, Packet, PacketType};
use sshbridge::konnectivity::Options;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn server_accepts_an_agent_with_metadata_it_does_not_know() {
    let bridge = Bridge::start(false, Options::DEFAULT_MAX_CONN_BUFFER)
        .await
        .unwrap();
    // What a newer agent might send: keys this server has never heard of,
    // and identifier kinds it does not know next to the one it does.
    let extra = [
        ("agentfeatures", "zstd,priority"),
        ("x-sshbridge-agent-version", "0.2.0"),
        ("agentcapabilities", "future-extension=1"),
    ];
    let mut agent = connect_agent_with(
        &bridge,
        &["a1"],
        "zone=eu-1&ipv4=127.0.0.1&rack=r7",
        false,
        &extra,
        Answer::Dial,
    )
    .await
    .unwrap();
    assert_eq!(agent.headers.get("serverid").unwrap(), "cp-test");
    bridge.wait_live("node-a", 1).await;

    // And it serves its node end to end.
    let echo = echo_server().await;
    let mut stream = within("dial", bridge.hub.dial("node-a", "127.0.0.1", echo.port()))
        .await
        .unwrap();
    assert!(matches!(
        agent.next_seen().await.payload,
        Some(Payload::DialRequest(_))
    ));
    within("echo", stream.write_all(b"skew")).await.unwrap();
    let mut back = [0u8; 4];
    within("echo", stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(&back, b"skew");
}

#[test]
fn packets_with_unknown_fields_decode_as_the_known_ones() {
    let packet = Packet {
        r#type: PacketType::DialReq as i32,
        payload: Some(Payload::DialRequest(DialRequest {
            protocol: "tcp".into(),
            address: "10.0.0.5:10250".into(),
            random: 42,
        })),
    };
    let mut bytes = packet.encode_to_vec();
    // Field 15 (varint 7) and field 16 (bytes "new"): fields a newer
    // peer could add to Packet.
    bytes.extend_from_slice(&[15 << 3, 7]);
    bytes.extend_from_slice(&[(16 << 3 | 2) as u8, 1, 3, b'n', b'e', b'w']);
    let decoded = Packet::decode(&bytes[..]).expect("unknown fields are skipped");
    assert_eq!(decoded, packet);
}
