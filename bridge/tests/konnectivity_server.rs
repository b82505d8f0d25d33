//! The Konnectivity agent server and path, and the gRPC egress frontend,
//! against a scripted agent and a tonic ProxyService client, all on
//! loopback.

#[path = "konnectivity_server/kit.rs"]
mod kit;
#[path = "konnectivity_server/proxy.rs"]
mod proxy;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kit::{connect_agent, echo_server, firehose_server, pattern, within, Answer, Bridge};
use sshbridge::konnectivity::proto::packet::Payload;
use sshbridge::konnectivity::proto::Packet;
use sshbridge::konnectivity::Options;
use sshbridge::path::DialError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// The agent server's `stall_timeout` in [`Bridge::start`].
const STALL: Duration = Duration::from_secs(1);

/// Writes `sent` on `stream` while reading the echo back; bounded.
async fn echo_through<S>(stream: &mut S, sent: &[u8], what: &str) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = async { wr.write_all(sent).await.unwrap() };
    let mut got = vec![0u8; sent.len()];
    let reader = rd.read_exact(&mut got);
    within(what, async { tokio::join!(writer, reader).1.unwrap() }).await;
    got
}

#[tokio::test]
async fn a_connection_never_read_holds_the_others_only_until_the_stall_timeout() {
    let limit = MIB;
    let bridge = Bridge::start(false, limit).await.unwrap();
    let mut agent = connect_agent(&bridge, &["a1"], "host=node-a", false, Answer::Dial)
        .await
        .unwrap();
    bridge.wait_live("node-a", 1).await;
    let (firehose, echo) = (firehose_server().await, echo_server().await);
    let sent = pattern(8 * MIB);
    // What the busy echo takes on this machine with nothing stalled.
    let alone = {
        let started = Instant::now();
        let mut s = within("dial", bridge.hub.dial("node-a", "127.0.0.1", echo.port()))
            .await
            .unwrap();
        let got = echo_through(&mut s, &sent, "8 MiB alone").await;
        assert!(got == sent, "bytes changed on the way");
        started.elapsed()
    };
    // Dialed first: a dial answer waits behind a stall like data does.
    let mut busy = within("dial", bridge.hub.dial("node-a", "127.0.0.1", echo.port()))
        .await
        .unwrap();
    // Never read: the firehose fills its buffer at once.
    let mut stalled = within(
        "dial",
        bridge.hub.dial("node-a", "127.0.0.1", firehose.port()),
    )
    .await
    .unwrap();
    // Small echoes back to back on another connection of the same agent,
    // from before the stalled connection fills until after it is cut: the
    // longest wait for one of them is how long the stall held the others.
    let cut = AtomicBool::new(false);
    let pings = async {
        let (mut longest, mut after_cut, mut n) = (Duration::ZERO, 0, 0u64);
        while after_cut < 3 {
            let started = Instant::now();
            let msg = n.to_be_bytes();
            busy.write_all(&msg).await.unwrap();
            let mut back = [0u8; 8];
            busy.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg, "echo {n} came back different");
            longest = longest.max(started.elapsed());
            after_cut += u32::from(cut.load(Ordering::Acquire));
            n += 1;
        }
        longest
    };
    // The stalled connection is cut, not buffered without bound.
    let watch = async {
        loop {
            if let Some(Payload::CloseRequest(c)) = agent.next_seen().await.payload {
                // 1 was the echo alone, 2 the busy one, 3 the stalled one.
                if c.connect_id == 3 {
                    return cut.store(true, Ordering::Release);
                }
            }
        }
    };
    let (longest, ()) = within("echoes beside a stalled connection", async {
        tokio::join!(pings, watch)
    })
    .await;
    let slack = Duration::from_secs(2);
    assert!(
        longest <= STALL + slack,
        "an echo beside the stalled connection waited {longest:?}; the stall timeout \
         is {STALL:?}"
    );
    // Then bulk data moves at its usual pace (with room for a busy machine).
    let started = Instant::now();
    let got = echo_through(
        &mut busy,
        &sent,
        "8 MiB after the stalled connection was cut",
    )
    .await;
    let took = started.elapsed();
    assert!(got == sent, "bytes changed on the way");
    let bound = (alone * 3).max(Duration::from_secs(3));
    assert!(
        took <= bound,
        "8 MiB took {took:?} after the cut, {alone:?} before the stall"
    );
    assert_eq!(bridge.hub.stats("node-a").overflow_closes, 1);
    let mut sink = vec![0u8; 64 * 1024];
    let err = within("drain the stalled connection", async {
        loop {
            match stalled.read(&mut sink).await {
                Ok(0) => panic!("an overflowed connection must end with an error"),
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    })
    .await;
    assert!(err.to_string().contains("took no bytes for 1s"), "{err}");
}

#[tokio::test]
async fn a_download_faster_than_its_reader_arrives_whole() {
    let limit = 256 * 1024;
    let bridge = Bridge::start(false, limit).await.unwrap();
    let _agent = connect_agent(&bridge, &["a1"], "host=node-a", false, Answer::Dial)
        .await
        .unwrap();
    bridge.wait_live("node-a", 1).await;
    let echo = echo_server().await;
    let mut stream = within("dial", bridge.hub.dial("node-a", "127.0.0.1", echo.port()))
        .await
        .unwrap();
    // 4 MiB through a 256 KiB buffer, read in small slow steps: the agent
    // stream waits for this reader instead of cutting it off.
    let sent = pattern(4 * MIB);
    let (mut rd, mut wr) = tokio::io::split(&mut stream);
    let writer = async { wr.write_all(&sent).await.unwrap() };
    let reader = async {
        let mut got = Vec::with_capacity(sent.len());
        let mut buf = vec![0u8; 16 * 1024];
        while got.len() < sent.len() {
            let n = rd.read(&mut buf).await.unwrap();
            assert!(n > 0, "ended after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        got
    };
    let got = within("4 MiB to a slow reader", async {
        tokio::join!(writer, reader).1
    })
    .await;
    assert!(got == sent, "bytes changed on the way");
    assert_eq!(bridge.hub.stats("node-a").overflow_closes, 0);
}

#[tokio::test]
async fn drain_lowers_liveness_and_a_reconnect_replaces_the_old_stream() {
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
