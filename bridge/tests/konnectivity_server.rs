//! The Konnectivity agent server and path, and the gRPC egress frontend,
//! against a scripted agent and a tonic ProxyService client, all on
//! loopback.

#[path = "konnectivity_server/flow.rs"]
mod flow;
#[path = "konnectivity_server/kit.rs"]
mod kit;
#[path = "konnectivity_server/proxy.rs"]
mod proxy;

use std::time::Duration;

use kit::{connect_agent, echo_server, pattern, within, Answer, Bridge};
use sshbridge::konnectivity::proto::packet::Payload;
use sshbridge::konnectivity::proto::Packet;
use sshbridge::konnectivity::Options;
use sshbridge::path::DialError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One mebibyte.
const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn handshake_announces_the_server_and_requires_one_agent_id() {
    let bridge = Bridge::start(false, Options::DEFAULT_MAX_CONN_BUFFER)
        .await
        .unwrap();
    let agent = connect_agent(&bridge, &["a1"], "host=node-a", false, Answer::Dial)
        .await
        .unwrap();
    assert_eq!(agent.headers.get("serverid").unwrap(), "cp-test");
    assert_eq!(agent.headers.get("servercount").unwrap(), "3");
    bridge.wait_live("node-a", 1).await;
    let infos = bridge.hub.agents("node-a");
    assert_eq!(infos.len(), 1);
    assert_eq!((infos[0].id.as_str(), infos[0].draining), ("a1", false));

    for ids in [&[][..], &["x", "y"][..]] {
        let err = connect_agent(&bridge, ids, "host=node-a", false, Answer::Dial)
            .await
            .err()
            .expect("rejected");
        let status = err.downcast_ref::<tonic::Status>().expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("agentID"), "{status}");
    }
    assert_eq!(bridge.hub.agents("node-a").len(), 1);
}

#[tokio::test]
async fn mtls_rejects_an_agent_without_a_client_certificate() {
    let bridge = Bridge::start(true, Options::DEFAULT_MAX_CONN_BUFFER)
        .await
        .unwrap();
    let refused = connect_agent(&bridge, &["a1"], "host=node-a", false, Answer::Dial).await;
    assert!(refused.is_err(), "an agent without a certificate got in");
    assert!(bridge.hub.agents("node-a").is_empty());
    within(
        "agent with certificate",
        connect_agent(&bridge, &["a2"], "host=node-a", true, Answer::Dial),
    )
    .await
    .unwrap();
    bridge.wait_live("node-a", 1).await;
}

#[tokio::test]
async fn a_dial_carries_bytes_intact_and_closes_with_close_req() {
    let bridge = Bridge::start(false, Options::DEFAULT_MAX_CONN_BUFFER)
        .await
        .unwrap();
    let mut agent = connect_agent(&bridge, &["a1"], "ipv4=127.0.0.1", false, Answer::Dial)
        .await
        .unwrap();
    bridge.wait_live("node-a", 1).await;
    let echo = echo_server().await;
    let mut stream = within("dial", bridge.hub.dial("node-a", "127.0.0.1", echo.port()))
        .await
        .unwrap();
    let random = match agent.next_seen().await.payload {
        Some(Payload::DialRequest(req)) => {
            assert_eq!(req.address, echo.to_string());
            assert_eq!(req.protocol, "tcp");
            req.random
        }
        other => panic!("expected DIAL_REQ, got {other:?}"),
    };
    assert_ne!(random, 0);

    let sent = pattern(3 * MIB);
    let (mut rd, mut wr) = tokio::io::split(&mut stream);
    let writer = async {
        wr.write_all(&sent).await.unwrap();
    };
    let mut got = vec![0u8; sent.len()];
    let reader = rd.read_exact(&mut got);
    within("echo", async { tokio::join!(writer, reader).1.unwrap() }).await;
    assert!(got == sent, "bytes changed on the way");
    let stats = bridge.hub.stats("node-a");
    assert_eq!((stats.dials_ok, stats.open_streams), (1, 1));
    assert_eq!(stats.bytes_to_node, sent.len() as u64);
    assert_eq!(stats.bytes_from_node, sent.len() as u64);
    assert_eq!(bridge.hub.agents("node-a")[0].open_connections, 1);

    drop(stream);
    match agent.next_seen().await.payload {
        Some(Payload::CloseRequest(c)) => assert_eq!(c.connect_id, 1),
        other => panic!("expected CLOSE_REQ, got {other:?}"),
    }
    assert_eq!(bridge.hub.stats("node-a").open_streams, 0);
}

#[tokio::test]
async fn agent_errors_map_to_502_and_504_and_no_agent_to_503() {
    let bridge = Bridge::start(false, Options::DEFAULT_MAX_CONN_BUFFER)
        .await
        .unwrap();
    let err = bridge
        .hub
        .dial("node-a", "127.0.0.1", 80)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, DialError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("no Konnectivity agent"), "{err}");

    let refused = "dial tcp 127.0.0.1:9: connect: connection refused";
    let _a = connect_agent(
        &bridge,
        &["a1"],
        "host=node-a",
        false,
        Answer::Fail(refused.into()),
    )
    .await
    .unwrap();
    let _b = connect_agent(
        &bridge,
        &["b1"],
        "host=node-b",
        false,
        Answer::Fail("dial tcp 10.0.0.6:80: i/o timeout".into()),
    )
    .await
    .unwrap();
    bridge.wait_live("node-a", 1).await;
    bridge.wait_live("node-b", 1).await;
    let err = within("dial", bridge.hub.dial("node-a", "127.0.0.1", 9))
        .await
        .err()
        .unwrap();
    assert_eq!(err.http_status(), 502);
    assert!(err.to_string().contains(refused), "{err}");
    let err = within("dial", bridge.hub.dial("node-b", "10.0.0.6", 80))
        .await
        .err()
        .unwrap();
    assert_eq!(err.http_status(), 504, "{err}");
    assert_eq!(bridge.hub.stats("node-a").dials_refused, 1);
    assert_eq!(bridge.hub.stats("node-b").dials_timeout, 1);
}

#[tokio::test]
async fn a_killed_agent_ends_its_connections_at_once_and_dials_get_503() {
    let bridge = Bridge::start(false, Options::DEFAULT_MAX_CONN_BUFFER)
        .await
        .unwrap();
    let agent = connect_agent(&bridge, &["a1"], "host=node-a", false, Answer::Dial)
        .await
        .unwrap();
    bridge.wait_live("node-a", 1).await;
    let echo = echo_server().await;
    let mut stream = within("dial", bridge.hub.dial("node-a", "127.0.0.1", echo.port()))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    stream.write_all(b"ping").await.unwrap();
    within("echo", stream.read_exact(&mut buf[..4]))
        .await
        .unwrap();

    agent.kill();
    let read = within("read after kill", stream.read(&mut buf)).await;
    let err = read.expect_err("the read must fail, not look like a clean end");
    assert!(err.to_string().contains("a1"), "{err}");
    bridge.wait_live("node-a", 0).await;
    let err = bridge
        .hub
        .dial("node-a", "127.0.0.1", echo.port())
        .await
        .err()
        .unwrap();
    assert_eq!(err.http_status(), 503, "{err}");

    // Back again: dials work.
    let _agent = connect_agent(&bridge, &["a1"], "host=node-a", false, Answer::Dial)
        .await
        .unwrap();
    bridge.wait_live("node-a", 1).await;
    within("dial", bridge.hub.dial("node-a", "127.0.0.1", echo.port()))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_abandoned_dial_sends_dial_cls_with_its_random() {
    let bridge = Bridge::start(false, Options::DEFAULT_MAX_CONN_BUFFER)
        .await
        .unwrap();
    let mut agent = connect_agent(&bridge, &["a1"], "host=node-a", false, Answer::Hold)
        .await
        .unwrap();
    bridge.wait_live("node-a", 1).await;
    let dial = bridge.hub.dial("node-a", "127.0.0.1", 80);
    let gave_up = tokio::time::timeout(Duration::from_millis(300), dial).await;
    assert!(gave_up.is_err(), "the held dial must not be answered");
    let random = match agent.next_seen().await.payload {
        Some(Payload::DialRequest(req)) => req.random,
        other => panic!("expected DIAL_REQ, got {other:?}"),
    };
    match agent.next_seen().await.payload {
        Some(Payload::CloseDial(c)) => assert_eq!(c.random, random),
        other => panic!("expected DIAL_CLS, got {other:?}"),
    }
    assert_eq!(bridge.hub.stats("node-a").dials_abandoned, 1);
}

#[tokio::test]
async fn drain_lowers_liveness_and_a_reconnect_that_stays_replaces_the_old_stream() {
    let bridge = Bridge::start(false, Options::DEFAULT_MAX_CONN_BUFFER)
        .await
        .unwrap();
    let echo = echo_server().await;
    let old = connect_agent(&bridge, &["a1"], "host=node-a", false, Answer::Dial)
        .await
        .unwrap();
    bridge.wait_live("node-a", 1).await;
    old.tx.send(Packet::drain()).await.unwrap();
    bridge.wait_live("node-a", 0).await;
    assert!(bridge.hub.agents("node-a")[0].draining);
    // Draining, but the only agent: still used.
    let mut stream = within("dial", bridge.hub.dial("node-a", "127.0.0.1", echo.port()))
        .await
        .unwrap();

    let _new = connect_agent(&bridge, &["a1"], "host=node-a", false, Answer::Dial)
        .await
        .unwrap();
    bridge.wait_live("node-a", 1).await;
    let mut buf = [0u8; 8];
    let err = within("read on the replaced stream", stream.read(&mut buf))
        .await
        .expect_err("the old stream's connections end");
    assert!(err.to_string().contains("replaced"), "{err}");
    let infos = bridge.hub.agents("node-a");
    assert_eq!((infos.len(), infos[0].draining), (1, false));
    within(
        "dial through the new stream",
        bridge.hub.dial("node-a", "127.0.0.1", echo.port()),
    )
    .await
    .unwrap();
}

/// An agent behind a load balancer lands here again while it already
/// serves from here, reads `serverID`, finds a duplicate and closes the new
/// stream at once: its first stream and the connection on it are untouched.
#[tokio::test]
async fn a_duplicate_stream_that_closes_at_once_leaves_the_serving_one() {
    let bridge = Bridge::start(false, Options::DEFAULT_MAX_CONN_BUFFER)
        .await
        .unwrap();
    let echo = echo_server().await;
    let first = connect_agent(&bridge, &["a1"], "host=node-a", false, Answer::Dial)
        .await
        .unwrap();
    bridge.wait_live("node-a", 1).await;
    let mut stream = within("dial", bridge.hub.dial("node-a", "127.0.0.1", echo.port()))
        .await
        .unwrap();
    {
        let mut buf = [0u8; 4];
        stream.write_all(b"pong").await.expect("write before");
        within("echo before", stream.read_exact(&mut buf))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        let dup = connect_agent(&bridge, &["a1"], "host=node-a", false, Answer::Dial)
            .await
            .unwrap();
        assert_eq!(dup.headers.get("serverid").unwrap(), "cp-test");
        dup.kill();
    }
    within("the duplicates are gone", async {
        while bridge.hub.standby_streams() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut buf = [0u8; 4];
    stream
        .write_all(b"ping")
        .await
        .expect("write on the first stream");
    within("echo on the first stream", stream.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(bridge.hub.agents("node-a").len(), 1);
    within(
        "a new dial",
        bridge.hub.dial("node-a", "127.0.0.1", echo.port()),
    )
    .await
    .unwrap();
    drop(first);
}
