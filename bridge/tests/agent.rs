//! `sshbridge agent` against a minimal Konnectivity server written here
//! (the generated `AgentService` over tokio-rustls on 127.0.0.1:0), with
//! echo and silent targets on loopback.

#[path = "agent/kit.rs"]
mod kit;

use std::net::SocketAddr;
use std::time::Duration;

use sshbridge::agent::{Agent, AllowList};
use sshbridge::konnectivity::proto::packet::Payload;
use sshbridge::konnectivity::proto::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use kit::{echo_server, pattern, wait_connected, TestServer, WAIT};

#[tokio::test]
async fn serves_dials_data_and_closes_like_upstream() {
    let mut server = TestServer::start().await;
    let agent = Agent::spawn(server.config(), CancellationToken::new());
    let mut s = server.next_session().await;
    assert_eq!(s.agent_id, "agent-1");
    assert_eq!(s.identifiers, "host=node-a&ipv4=127.0.0.1");
    wait_connected(&agent, true).await;

    let echo = echo_server().await;
    let (id, err) = s.dial(echo, 11).await;
    assert_eq!((id, err.as_str()), (1, ""));
    s.round_trip(1, &pattern(300_000)).await;
    s.send(Packet::close_request(1)).await;
    match s.recv().await {
        Payload::CloseResponse(r) => assert_eq!((r.connect_id, r.error.as_str()), (1, "")),
        other => panic!("expected CLOSE_RSP, got {other:?}"),
    }
    let (id, err) = s.dial(echo, 12).await;
    assert_eq!((id, err.as_str()), (2, ""), "connectIDs grow per stream");
    s.round_trip(2, b"second").await;

    // A closed port: the error comes back, no connection.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (id, err) = s.dial(closed, 13).await;
    assert_eq!(id, 0);
    assert!(err.contains("refused"), "{err}");

    // A target that speaks and hangs up: DATA, then CLOSE_RSP from the agent.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let talker = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut c, _) = l.accept().await.unwrap();
        c.write_all(b"bye").await.unwrap();
    });
    let (id, _) = s.dial(talker, 14).await;
    assert_eq!(id, 4, "the failed dial used up connectID 3, as upstream");
    match s.recv().await {
        Payload::Data(d) => assert_eq!((d.connect_id, d.data.as_slice()), (4, &b"bye"[..])),
        other => panic!("expected DATA, got {other:?}"),
    }
    match s.recv().await {
        Payload::CloseResponse(r) => assert_eq!(r.connect_id, 4),
        other => panic!("expected CLOSE_RSP, got {other:?}"),
    }

    s.send(Packet::data(99, b"x".to_vec())).await;
    match s.recv().await {
        Payload::CloseResponse(r) => {
            assert_eq!(
                (r.connect_id, r.error.as_str()),
                (99, "unrecognized connectID")
            )
        }
        other => panic!("expected CLOSE_RSP, got {other:?}"),
    }
    let stats = agent.stats();
    assert_eq!((stats.dials_total, stats.dial_failures_total), (4, 1));
    assert_eq!(stats.connections_open, 1, "connection 2 is still open");
    assert!(stats.bytes_to_targets_total >= 300_006);
}

#[tokio::test]
async fn allow_list_refuses_without_dialing() {
    let mut server = TestServer::start().await;
    let echo = echo_server().await;
    let mut cfg = server.config();
    cfg.allow = AllowList::new(vec![format!("127.0.0.1/32:{}", echo.port())
        .parse()
        .unwrap()]);
    let agent = Agent::spawn(cfg, CancellationToken::new());
    let mut s = server.next_session().await;

    let forbidden = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (id, err) = s.dial(forbidden.local_addr().unwrap(), 1).await;
    assert_eq!(id, 0);
    assert!(
        err.contains("address not allowed by the agent's --allow list"),
        "{err}"
    );
    let accepted = tokio::time::timeout(Duration::from_millis(300), forbidden.accept()).await;
    assert!(
        accepted.is_err(),
        "the agent must not dial a refused address"
    );

    let (id, err) = s.dial(echo, 2).await;
    assert_eq!((id, err.as_str()), (2, ""));
    s.round_trip(id, b"allowed").await;
    assert_eq!(agent.stats().dials_denied_total, 1);
}

/// A listener whose accept queue is full: further connects hang.
async fn black_hole() -> (SocketAddr, Vec<TcpStream>) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(c)) => held.push(c),
            _ => break,
        }
    }
    std::mem::forget(listener); // never accepts, never closes during the test
    (addr, held)
}

#[tokio::test]
async fn dial_cls_cancels_a_pending_dial() {
    let mut server = TestServer::start().await;
    let agent = Agent::spawn(server.config(), CancellationToken::new());
    let mut s = server.next_session().await;
    let (hole, _held) = black_hole().await;

    // Without DIAL_CLS the hanging dial answers with a timeout after 1s...
    let (id, err) = s.dial(hole, 1).await;
    assert_eq!(id, 0);
    assert!(err.contains("timeout"), "{err}");
    // ...with DIAL_CLS it never answers at all.
    s.send(Packet::dial_request(hole.to_string(), 2)).await;
    s.send(Packet::close_dial(2)).await;
    let quiet = tokio::time::timeout(Duration::from_millis(1800), s.inbound.message()).await;
    assert!(quiet.is_err(), "no answer to a cancelled dial: {quiet:?}");
    assert_eq!(agent.stats().dials_cancelled_total, 1);

    let echo = echo_server().await;
    let (id, err) = s.dial(echo, 3).await;
    assert_eq!((id, err.as_str()), (3, ""));
}

#[tokio::test]
async fn reconnects_when_the_server_goes_away() {
    let mut server = TestServer::start().await;
    let agent = Agent::spawn(server.config(), CancellationToken::new());
    let mut s = server.next_session().await;
    wait_connected(&agent, true).await;
    let echo = echo_server().await;
    assert_eq!(s.dial(echo, 1).await.0, 1);

    server.cut_connections();
    wait_connected(&agent, false).await;
    let mut s2 = server.next_session().await;
    wait_connected(&agent, true).await;
    assert_eq!(
        s2.dial(echo, 2).await,
        (1, String::new()),
        "a new stream counts from 1"
    );
    s2.round_trip(1, b"after reconnect").await;
    assert!(agent.stats().connects_total >= 2);
    drop(s);
}

#[tokio::test]
async fn drain_sends_drain_and_exits_when_connections_end() {
    let mut server = TestServer::start().await;
    let mut agent = Agent::spawn(server.config(), CancellationToken::new());
    let mut s = server.next_session().await;
    let echo = echo_server().await;
    assert_eq!(s.dial(echo, 1).await.0, 1);

    agent.drain();
    assert!(matches!(s.recv().await, Payload::Drain(_)), "DRAIN sent");
    // Still serving its open connection.
    s.round_trip(1, b"still here").await;
    assert!(!agent.is_finished());

    s.send(Packet::close_request(1)).await;
    assert!(matches!(s.recv().await, Payload::CloseResponse(_)));
    tokio::time::timeout(WAIT, agent.wait())
        .await
        .expect("a drained agent exits once its connections are done");
    assert!(!*agent.connected().borrow());
}

#[tokio::test]
async fn a_target_that_stops_reading_is_closed_alone() {
    let mut server = TestServer::start().await;
    let mut cfg = server.config();
    cfg.write_buffer = 256 * 1024;
    cfg.stall_timeout = Duration::from_secs(1);
    let agent = Agent::spawn(cfg, CancellationToken::new());
    let mut s = server.next_session().await;

    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mute = l.local_addr().unwrap();
    let (keep_tx, mut keep_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let (c, _) = l.accept().await.unwrap();
        let _ = keep_tx.send(c).await; // held open, never read
    });
    let echo = echo_server().await;
    assert_eq!(s.dial(mute, 1).await.0, 1);
    assert_eq!(s.dial(echo, 2).await.0, 2);

    // Flood the mute target until the agent gives up on it.
    let out = s.out.clone();
    let flood = tokio::spawn(async move {
        let chunk = vec![7u8; 32 * 1024];
        for _ in 0..4096 {
            if out.send(Ok(Packet::data(1, chunk.clone()))).await.is_err() {
                return;
            }
        }
    });
    let err = match s.recv().await {
        Payload::CloseResponse(r) if r.connect_id == 1 => r.error,
        other => panic!("expected CLOSE_RSP for 1, got {other:?}"),
    };
    flood.abort();
    assert!(
        err.contains("took no bytes for 1s"),
        "CLOSE_RSP error: {err:?}"
    );
    // The other connection on the same stream is unaffected. (DATA for 1
    // still in flight is answered "unrecognized connectID", as upstream.)
    let data = pattern(100_000);
    s.send(Packet::data(2, data.clone())).await;
    let mut got = Vec::new();
    while got.len() < data.len() {
        match s.recv().await {
            Payload::Data(d) if d.connect_id == 2 => got.extend_from_slice(&d.data),
            Payload::CloseResponse(r) if r.connect_id == 1 => {}
            other => panic!("expected DATA on 2, got {other:?}"),
        }
    }
    assert!(got == data, "bytes on the other connection intact");
    assert_eq!(agent.stats().overflow_closes_total, 1);
    drop(keep_rx.recv().await);
}

#[tokio::test]
async fn an_upload_faster_than_its_target_arrives_whole() {
    let mut server = TestServer::start().await;
    let mut cfg = server.config();
    cfg.write_buffer = 128 * 1024;
    cfg.stall_timeout = Duration::from_secs(5);
    let agent = Agent::spawn(cfg, CancellationToken::new());
    let mut s = server.next_session().await;
    // A target that reads 16 KiB every 5 ms: far slower than the sender.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = l.local_addr().unwrap();
    let (got_tx, mut got_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let (mut c, _) = l.accept().await.unwrap();
        let mut all = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = got_tx.send(all).await;
    });
    assert_eq!(s.dial(slow, 1).await.0, 1);
    let data = pattern(2 * 1024 * 1024);
    for chunk in data.chunks(32 * 1024) {
        s.send(Packet::data(1, chunk.to_vec())).await;
    }
    s.send(Packet::close_request(1)).await;
    let got = tokio::time::timeout(Duration::from_secs(60), got_rx.recv())
        .await
        .expect("the slow target got its bytes in time")
        .expect("target result");
    assert!(
        got == data,
        "{} of {} bytes arrived intact",
        got.len(),
        data.len()
    );
    assert_eq!(agent.stats().overflow_closes_total, 0);
}

#[test]
fn cli_help_lists_flags_and_missing_ca_is_a_usage_error() {
    let bin = env!("CARGO_BIN_EXE_sshbridge");
    let out = std::process::Command::new(bin)
        .args(["agent", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--server",
        "--ca-cert",
        "--cert",
        "--key",
        "--agent-id",
        "--identifiers",
        "--allow",
        "--server-name",
        "--sync-interval",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
    let out = std::process::Command::new(bin)
        .args(["agent", "--server", "127.0.0.1:8132"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca-cert"));
    let out = std::process::Command::new(bin)
        .args([
            "agent",
            "--server",
            "127.0.0.1:8132",
            "--ca-cert",
            "/nonexistent",
            "--allow",
            "10.0.0.0/8",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected CIDR:PORTS"));
}

#[tokio::test]
async fn cli_agent_connects_and_drains_on_sigterm() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = server.pki.write_ca(dir.path()).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sshbridge"))
        .args([
            "agent",
            "--server",
            &server.addr.to_string(),
            "--agent-id",
            "cli-agent",
        ])
        .args(["--identifiers", "host=node-b", "--ca-cert"])
        .arg(&ca)
        .kill_on_drop(true)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut s = server.next_session().await;
    assert_eq!(
        (s.agent_id.as_str(), s.identifiers.as_str()),
        ("cli-agent", "host=node-b")
    );
    let echo = echo_server().await;
    assert_eq!(s.dial(echo, 1).await.0, 1);

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal our own child");
    assert!(
        matches!(s.recv().await, Payload::Drain(_)),
        "DRAIN on SIGTERM"
    );
    s.round_trip(1, b"draining").await;
    s.send(Packet::close_request(1)).await;
    assert!(matches!(s.recv().await, Payload::CloseResponse(_)));
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("agent exits once its connections are done")
        .unwrap();
    assert!(status.success(), "{status}");
}
