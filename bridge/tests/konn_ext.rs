//! The Konnectivity path between the bridge's agent server and a real
//! `sshbridge agent` process (docs/konnectivity.md): the `half-close` and
//! `credit` extensions, compatibility mode's stall budget, and the caps
//! per agent. Targets are TCP servers on loopback that count their open
//! connections.

#[path = "konn_ext/kit.rs"]
mod kit;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use sshbridge::konnectivity::{Extensions, Flow, Hub};
use sshbridge::path::BoxStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use kit::{pattern, within, Setup, Target};

#[tokio::test]
async fn with_our_agent_a_half_closed_echo_gets_every_byte_then_eof() {
    let setup = Setup::start(Flow::default(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(setup.mode(), "credit");
    assert_eq!(
        setup.hub.agents("node-a")[0].extensions,
        "half-close,credit"
    );
    let echo = Target::echo().await;
    let sockets = setup.agent_sockets();
    let mut stream = setup.dial(echo.addr).await;
    let sent = pattern(5000);
    stream.write_all(&sent).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("echo then EOF", 10, stream.read_to_end(&mut got))
        .await
        .expect("EOF, not an error");
    assert!(got == sent, "got {} of 5000 bytes", got.len());
    drop(stream);
    setup.settles(sockets, &echo).await;
}

#[tokio::test]
async fn with_our_agent_a_target_that_closes_first_ends_the_connection() {
    let setup = Setup::start(Flow::default(), Duration::from_secs(30))
        .await
        .unwrap();
    // Reads 1 KiB, answers "bye" and closes while the client still sends.
    let target = Target::start(|mut s| async move {
        let mut buf = [0u8; 1024];
        let _ = s.read_exact(&mut buf).await;
        let _ = s.write_all(b"bye").await;
    })
    .await;
    let sockets = setup.agent_sockets();
    let stream = setup.dial(target.addr).await;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = async {
        let chunk = vec![1u8; 4096];
        // Keeps sending until the connection is gone (bounded below).
        while wr.write_all(&chunk).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let reader = async {
        let mut got = Vec::new();
        let _ = rd.read_to_end(&mut got).await;
        got
    };
    let (_, got) = within("target closes first", 15, async {
        tokio::join!(writer, reader)
    })
    .await;
    assert_eq!(got, b"bye");
    drop((rd, wr));
    setup.settles(sockets, &target).await;
}

#[tokio::test]
async fn with_our_agent_a_client_that_vanishes_mid_download_frees_everything() {
    let setup = Setup::start(Flow::default(), Duration::from_secs(30))
        .await
        .unwrap();
    let firehose = Target::firehose().await;
    let sockets = setup.agent_sockets();
    let mut stream = setup.dial(firehose.addr).await;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < 1 << 20 {
        got += within("download", 10, stream.read(&mut buf)).await.unwrap();
    }
    // The client is gone (killed: its stream is dropped mid-transfer).
    drop(stream);
    setup.settles(sockets, &firehose).await;
}

/// One echo round trip of `msg`.
async fn round_trip(stream: &mut BoxStream, msg: &[u8]) -> Duration {
    let started = Instant::now();
    stream.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    within("echo answer", 10, stream.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(back, msg);
    started.elapsed()
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[tokio::test]
async fn with_credit_three_unread_firehoses_do_not_slow_an_echo_or_the_probes() {
    let soak: u64 = std::env::var("KONN_EXT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let setup = Setup::start(Flow::default(), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(setup.mode(), "credit");
    let (firehose, echo) = (Target::firehose().await, Target::echo().await);
    let mut stream = setup.dial(echo.addr).await;
    // The machine's own noise first: the same echo with nothing beside it.
    let mut alone = Vec::new();
    let calm = Instant::now() + Duration::from_secs(2);
    while Instant::now() < calm {
        alone.push(round_trip(&mut stream, b"ping").await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let baseline = p99(alone);
    // Never read: each fills its window and then waits alone.
    let mut stuck = Vec::new();
    for _ in 0..3 {
        stuck.push(setup.dial(firehose.addr).await);
    }
    let until = Instant::now() + Duration::from_secs(soak);
    let (mut rtts, mut probes) = (Vec::new(), 0);
    let mut next_probe = Instant::now();
    while Instant::now() < until {
        rtts.push(round_trip(&mut stream, b"ping").await);
        if Instant::now() >= next_probe {
            // A health probe: a fresh dial and a round trip, within 1 s.
            let started = Instant::now();
            let mut probe = setup.dial(echo.addr).await;
            round_trip(&mut probe, b"probe").await;
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "probe took {:?}",
                started.elapsed()
            );
            probes += 1;
            next_probe += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (p, median) = (p99(rtts.clone()), p50(rtts.clone()));
    eprintln!(
        "echo beside three unread firehoses: p50 {median:?}, p99 {p:?} over {} round trips \
         (alone: p99 {baseline:?}), {probes} probes",
        rtts.len()
    );
    // 10 ms as the issue asks; on a loaded machine, the echo's own p99
    // without firehoses sets the floor (head-of-line blocking would show
    // as waits of the stall timeout, 2 s, far above either).
    let bound = Duration::from_millis(10).max(baseline * 4);
    let worst = *rtts.iter().max().unwrap();
    assert!(
        worst < Duration::from_secs(1),
        "one round trip took {worst:?}"
    );
    assert!(
        p < bound,
        "echo p99 {p:?} (p50 {median:?}) over {} round trips; bound {bound:?}",
        rtts.len()
    );
    assert!(probes >= soak as usize / 2, "only {probes} probes ran");
    let stats = setup.hub.stats("node-a");
    assert_eq!(
        (stats.overflow_closes, stats.credit_violations),
        (0, 0),
        "nobody was cut"
    );
    // The firehoses are still open, each holding at most one window.
    for s in &mut stuck {
        let mut buf = [0u8; 1];
        within("stuck stream still open", 5, s.read_exact(&mut buf))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn in_compatibility_mode_a_reader_just_under_the_timeout_runs_out_of_budget() {
    let stall = Duration::from_secs(1);
    let flow = Flow {
        extensions: Extensions::NONE,
        ..Flow::default()
    };
    let setup = Setup::start(flow, stall).await.unwrap();
    assert_eq!(setup.mode(), "compatibility");
    let (firehose, echo) = (Target::firehose().await, Target::echo().await);
    let mut echo_stream = setup.dial(echo.addr).await;
    let mut slow = setup.dial(firehose.addr).await;
    // Takes 32 KiB, then waits just under the timeout, again and again.
    let slow_reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        let started = Instant::now();
        loop {
            match slow.read_exact(&mut buf).await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(900)).await,
                Err(e) => return (started.elapsed(), e.to_string()),
            }
            if started.elapsed() > Duration::from_secs(30) {
                return (started.elapsed(), "never closed".to_string());
            }
        }
    });
    let (took, err) = within("the slow reader is closed", 40, slow_reader)
        .await
        .unwrap();
    assert!(
        err.contains("in total within"),
        "the slow reader must be closed for its budget, got {err:?} after {took:?}"
    );
    assert!(took < Duration::from_secs(10), "closed only after {took:?}");
    assert_eq!(setup.hub.stats("node-a").overflow_closes, 1);
    // The echo stream beside it answers at once again.
    let mut rtts = Vec::new();
    for _ in 0..100 {
        rtts.push(round_trip(&mut echo_stream, b"ping").await);
    }
    let p = p99(rtts);
    assert!(p < Duration::from_millis(100), "echo p99 {p:?}");
}

#[tokio::test]
async fn a_dial_past_the_connection_cap_of_an_agent_is_refused() {
    let flow = Flow {
        max_connections_per_agent: 2,
        ..Flow::default()
    };
    let setup = Setup::start(flow, Duration::from_secs(30)).await.unwrap();
    let echo = Target::echo().await;
    let (_a, _b) = (setup.dial(echo.addr).await, setup.dial(echo.addr).await);
    let err = match within(
        "third dial",
        10,
        setup.hub.dial("node-a", "127.0.0.1", echo.addr.port()),
    )
    .await
    {
        Ok(_) => panic!("a third connection must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("max_connections_per_agent"), "{err}");
    assert_eq!(setup.hub.stats("node-a").dials_over_connection_cap, 1);
}

/// The gRPC egress frontend dialing through the hub, for a Proxy client.
struct HubDial(Hub);

impl sshbridge::egress::Dial for HubDial {
    type Route = sshbridge::egress::Target;

    fn route(
        &self,
        host: &str,
        port: u16,
    ) -> Result<sshbridge::egress::Target, sshbridge::egress::EgressError> {
        sshbridge::egress::Target::route(host, port)
    }

    async fn dial(
        &self,
        to: sshbridge::egress::Target,
    ) -> Result<sshbridge::egress::Dialed, sshbridge::egress::EgressError> {
        let stream = self.0.dial("node-a", &to.host, to.port).await?;
        Ok(sshbridge::egress::Dialed {
            stream,
            node: "node-a".into(),
        })
    }
}

#[tokio::test]
async fn a_proxy_client_of_ours_half_closes_through_the_grpc_frontend_and_our_agent() {
    use sshbridge::egress::http_connect::Lifecycle;
    use sshbridge::konnectivity::proto::packet::Payload;
    use sshbridge::konnectivity::proto::Packet;

    let setup = Setup::start(Flow::default(), Duration::from_secs(30))
        .await
        .unwrap();
    let echo = Target::echo().await;
    let sockets = setup.agent_sockets();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("konnectivity.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let life = Lifecycle::default();
    let stop = life.stop_accepting.clone();
    let dialer = Arc::new(HubDial(setup.hub.clone()));
    tokio::spawn(sshbridge::egress::grpc::serve_unix(listener, dialer, life));
    let mut client = sshbridge_sim::grpc::proxy_client(&sock);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let request =
        sshbridge_sim::grpc::with_half_close(tokio_stream::wrappers::ReceiverStream::new(rx));
    let response = within("Proxy", 10, client.proxy(request)).await.unwrap();
    let ext = response
        .metadata()
        .get("sshbridge-ext")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(ext.as_deref(), Some("half-close"));
    let mut inbound = response.into_inner();
    tx.send(Packet::dial_request(echo.addr.to_string(), 7))
        .await
        .unwrap();
    let first = within("DIAL_RSP", 10, inbound.message()).await.unwrap();
    match first.and_then(|p| p.payload) {
        Some(Payload::DialResponse(r)) => assert!(r.error.is_empty(), "{}", r.error),
        other => panic!("expected DIAL_RSP, got {other:?}"),
    }
    let sent = pattern(5000);
    tx.send(Packet::data(1, sent.clone())).await.unwrap();
    tx.send(Packet::half_close(1)).await.unwrap();
    let mut got = Vec::new();
    let mut seen_half_close = false;
    loop {
        let next = within("frontend packets", 10, inbound.message()).await;
        match next.unwrap().and_then(|p| p.payload) {
            Some(Payload::Data(d)) => {
                assert!(!seen_half_close, "DATA after HALF_CLOSE");
                got.extend_from_slice(&d.data);
            }
            Some(Payload::HalfClose(_)) => seen_half_close = true,
            Some(Payload::CloseResponse(c)) => {
                assert!(c.error.is_empty(), "{}", c.error);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        seen_half_close,
        "the target's EOF must arrive as HALF_CLOSE"
    );
    assert!(got == sent, "got {} of 5000 bytes", got.len());
    drop(tx);
    stop.cancel();
    setup.settles(sockets, &echo).await;
}

#[tokio::test]
async fn in_compatibility_mode_a_half_closed_echo_gets_its_answer_then_ends_after_the_idle_limit() {
    let flow = Flow {
        extensions: Extensions::NONE,
        half_close_idle: Duration::from_millis(500),
        ..Flow::default()
    };
    let setup = Setup::start(flow, Duration::from_secs(30)).await.unwrap();
    assert_eq!(setup.mode(), "compatibility");
    assert_eq!(setup.hub.agents("node-a")[0].extensions, "");
    let echo = Target::echo().await;
    let sockets = setup.agent_sockets();
    let mut stream = setup.dial(echo.addr).await;
    let sent = pattern(5000);
    stream.write_all(&sent).await.unwrap();
    let started = Instant::now();
    stream.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("answer then EOF", 10, stream.read_to_end(&mut got))
        .await
        .expect("EOF, not an error");
    assert!(got == sent, "got {} of 5000 bytes", got.len());
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(setup.hub.stats("node-a").half_close_idle_closes, 1);
    drop(stream);
    setup.settles(sockets, &echo).await;
}
