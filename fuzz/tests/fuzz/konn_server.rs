//! The Konnectivity agent server's packet handling, as a hostile agent
//! meets it: each input is a sequence of packets (a length byte, then that
//! many bytes decoded as a `Packet`; what does not decode is skipped) sent
//! on a real agent stream (TLS, gRPC) to the real server on loopback while
//! the hub dials through that agent. A DIAL_RSP whose `random` is 0 gets
//! the random of the server's last DIAL_REQ, so sequences reach the
//! connected state. Checked: nothing panics in the server, and the agent
//! is unregistered soon after its stream ends (no leak).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Once;
use std::time::Duration;

use prost::Message;
use sshbridge_fuzz::{fuzz, Target};
use sshbridge_konnectivity::proto::packet::Payload;
use sshbridge_konnectivity::proto::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::konn_kit::{connect_agent, Server};

/// Set by the panic hook when any thread (a server task) panics.
static PANICKED: AtomicBool = AtomicBool::new(false);

fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// Frames `packets` as an input: a length byte before each encoding.
fn frame(packets: &[Packet]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        let bytes = p.encode_to_vec();
        out.push(bytes.len().min(255) as u8);
        out.extend_from_slice(&bytes[..bytes.len().min(255)]);
    }
    out
}

fn packets(input: &[u8]) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        if let Ok(p) = Packet::decode(&tail[..n]) {
            out.push(p);
        }
        rest = &tail[n..];
    }
    out
}

#[test]
fn fuzz_konnectivity_server_stream() {
    watch_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(Server::start()).expect("agent server");
    let echo = rt.block_on(crate::konn_kit::echo_server());
    let seeds = vec![
        frame(&[
            Packet::dial_response(0, 1, ""),
            Packet::data(1, b"hi".to_vec()),
        ]),
        frame(&[
            Packet::dial_response(0, 7, ""),
            Packet::data(7, b"x".to_vec()),
            Packet::close_response(7, ""),
            Packet::close_request(7),
        ]),
        frame(&[
            Packet::dial_response(0, 0, "refused"),
            Packet::close_dial(0),
        ]),
        frame(&[
            Packet::data(-1, vec![0; 200]),
            Packet::close_response(i64::MAX, "x"),
        ]),
        frame(&[Packet::dial_request("127.0.0.1:1", 5)]),
    ];
    let target = Target {
        name: "konnectivity_server_stream",
        seeds,
        dictionary: vec![
            b"\x00",
            b"\x08\x00",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
        ],
    };
    let n = AtomicI64::new(0);
    fuzz(target, |input| {
        let id = format!("fuzz-{}", n.fetch_add(1, Ordering::SeqCst));
        let sequence = packets(input);
        rt.block_on(one_stream(&server, &id, sequence, echo))?;
        if PANICKED.load(Ordering::SeqCst) {
            return Err("a server task panicked (see the panic message above)".into());
        }
        Ok(())
    });
}

async fn one_stream(
    server: &Server,
    id: &str,
    sequence: Vec<Packet>,
    echo: std::net::SocketAddr,
) -> Result<(), String> {
    let agent = connect_agent(server, id)
        .await
        .map_err(|e| format!("the server refused a well-formed agent: {e:#}"))?;
    let last_random = agent.last_random.clone();
    // A dial through the hub while the sequence plays.
    let hub = server.hub.clone();
    let dial = tokio::spawn(async move {
        let dialed = tokio::time::timeout(
            Duration::from_millis(100),
            hub.dial("node-a", "127.0.0.1", echo.port()),
        )
        .await;
        if let Ok(Ok(mut stream)) = dialed {
            let _ = tokio::time::timeout(Duration::from_millis(100), async {
                let _ = stream.write_all(b"ping").await;
                let mut buf = [0u8; 16];
                let _ = stream.read(&mut buf).await;
            })
            .await;
        }
    });
    // Give the DIAL_REQ a moment to arrive so DIAL_RSP can answer it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    for mut p in sequence {
        if let Some(Payload::DialResponse(r)) = &mut p.payload {
            if r.random == 0 {
                r.random = last_random.load(Ordering::SeqCst);
            }
        }
        if agent.tx.send(p).await.is_err() {
            break; // the server ended the stream: allowed
        }
        tokio::task::yield_now().await;
    }
    let _ = dial.await;
    agent.close();
    // The agent must leave the hub once its stream is gone.
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while server.hub.agents("node-a").iter().any(|a| a.id == id) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    if gone.is_err() {
        return Err(format!(
            "agent {id} still registered 5s after its stream ended"
        ));
    }
    Ok(())
}
