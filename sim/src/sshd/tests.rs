//! The simulated sshd driven by russh's client: auth, relaying, refusals
//! and shutdown, all on 127.0.0.1 port 0.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::ChannelOpenFailure;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::{SimSshd, SimSshdConfig};
use crate::keys::generate_ed25519;

pub(super) const T: Duration = Duration::from_secs(10);

/// A TCP echo server that answers EOF with EOF, counting connections.
pub(super) struct Echo {
    pub addr: std::net::SocketAddr,
    pub accepted: Arc<AtomicUsize>,
}

pub(super) async fn echo_server() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = socket.split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    Echo { addr, accepted }
}

/// Starts a simulated node that accepts `client_key` and may dial `allow`.
pub(super) async fn start_sim(client_key: &PrivateKey, allow: &str) -> (SimSshd, PublicKey) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_key = generate_ed25519();
    let host_public = host_key.public_key().clone();
    let config = SimSshdConfig {
        host_key,
        authorized: vec![client_key.public_key().clone()],
        allow: vec![allow.parse().unwrap()],
        name: "sim-node".into(),
    };
    let sshd = SimSshd::start(listener, config, CancellationToken::new());
    (sshd, host_public)
}

/// Accepts exactly one host key.
struct Pinned(PublicKey);

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(
            matches!(key, PublicKeyOrCertificate::PublicKey { key, .. } if key.key_data() == self.0.key_data()),
        )
    }
}

async fn connect(
    sshd: &SimSshd,
    host: &PublicKey,
    key: &PrivateKey,
) -> (client::Handle<Pinned>, bool) {
    let config = Arc::new(client::Config::default());
    let mut handle = timeout(
        T,
        client::connect(config, sshd.local_addr(), Pinned(host.clone())),
    )
    .await
    .unwrap()
    .unwrap();
    let auth = PrivateKeyWithHashAlg::new(Arc::new(key.clone()), None);
    let result = timeout(T, handle.authenticate_publickey("sshbridge", auth))
        .await
        .unwrap()
        .unwrap();
    (handle, result.success())
}

async fn open(
    handle: &client::Handle<Pinned>,
    addr: std::net::SocketAddr,
) -> Result<russh::Channel<client::Msg>, russh::Error> {
    let open = handle.channel_open_direct_tcpip(
        addr.ip().to_string(),
        addr.port().into(),
        "127.0.0.1",
        40000,
    );
    timeout(T, open).await.unwrap()
}

#[tokio::test]
async fn authorized_key_relays_bytes_both_ways_with_half_close() {
    let echo = echo_server().await;
    let key = generate_ed25519();
    let (sshd, host) = start_sim(&key, "127.0.0.0/8").await;
    let (handle, ok) = connect(&sshd, &host, &key).await;
    assert!(ok, "authorized key must log in");

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut stream = open(&handle, echo.addr).await.unwrap().into_stream();
    let (mut rd, mut wr) = tokio::io::split(&mut stream);
    let to_send = payload.clone();
    let write = async move {
        wr.write_all(&to_send).await.unwrap();
        // EOF must travel through the relay to the echo server, which then
        // closes its side, which must come back as EOF here.
        wr.shutdown().await.unwrap();
    };
    let read = async move {
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = timeout(T, async { tokio::join!(write, read) })
        .await
        .unwrap();
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "echoed bytes differ");

    let stats = sshd.stats();
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.channels_opened, 1);
    assert_eq!(stats.bytes_to_targets, payload.len() as u64);
    assert_eq!(stats.bytes_from_targets, payload.len() as u64);
}

#[tokio::test]
async fn unauthorized_key_is_rejected() {
    let echo = echo_server().await;
    let key = generate_ed25519();
    let stranger = generate_ed25519();
    let (sshd, host) = start_sim(&key, "127.0.0.0/8").await;
    let (handle, ok) = connect(&sshd, &host, &stranger).await;
    assert!(!ok, "a key outside the authorized list must not log in");
    // Without authentication no channel may be opened.
    assert!(open(&handle, echo.addr).await.is_err());
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 0);
    assert_eq!(sshd.stats().channels_opened, 0);
}

#[tokio::test]
async fn target_outside_allow_is_prohibited_without_dialing() {
    let echo = echo_server().await;
    let key = generate_ed25519();
    let (sshd, host) = start_sim(&key, "127.0.0.2/32").await;
    let (handle, ok) = connect(&sshd, &host, &key).await;
    assert!(ok);
    match open(&handle, echo.addr).await {
        Err(russh::Error::ChannelOpenFailure(reason)) => {
            assert_eq!(reason, ChannelOpenFailure::AdministrativelyProhibited)
        }
        other => panic!("expected administratively prohibited, got {other:?}"),
    }
    assert_eq!(
        echo.accepted.load(Ordering::SeqCst),
        0,
        "the target was dialed"
    );
    let stats = sshd.stats();
    assert_eq!((stats.channels_opened, stats.channels_refused), (0, 1));
}

#[tokio::test]
async fn refused_target_yields_connect_failed() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let key = generate_ed25519();
    let (sshd, host) = start_sim(&key, "127.0.0.0/8").await;
    let (handle, ok) = connect(&sshd, &host, &key).await;
    assert!(ok);
    match open(&handle, closed_addr).await {
        Err(russh::Error::ChannelOpenFailure(reason)) => {
            assert_eq!(reason, ChannelOpenFailure::ConnectFailed)
        }
        other => panic!("expected connect failed, got {other:?}"),
    }
    // The session survives a failed open: the next channel still works.
    let echo = echo_server().await;
    let mut stream = open(&handle, echo.addr).await.unwrap().into_stream();
    timeout(T, stream.write_all(b"ping"))
        .await
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 4];
    timeout(T, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn dropping_the_handle_closes_sessions_and_streams() {
    let echo = echo_server().await;
    let key = generate_ed25519();
    let (sshd, host) = start_sim(&key, "127.0.0.0/8").await;
    let addr = sshd.local_addr();
    let (handle, ok) = connect(&sshd, &host, &key).await;
    assert!(ok);
    let mut stream = open(&handle, echo.addr).await.unwrap().into_stream();
    timeout(T, stream.write_all(b"x")).await.unwrap().unwrap();
    let mut one = [0u8; 1];
    timeout(T, stream.read_exact(&mut one))
        .await
        .unwrap()
        .unwrap();

    drop(sshd);
    // The open stream ends (EOF or error) instead of hanging...
    let mut rest = Vec::new();
    let _ = timeout(T, stream.read_to_end(&mut rest)).await.unwrap();
    // ...and the session notices the disconnect.
    timeout(T, async {
        while !handle.is_closed() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn cancelling_the_token_stops_the_server_and_shutdown_waits() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = CancellationToken::new();
    let key = generate_ed25519();
    let config = SimSshdConfig {
        host_key: generate_ed25519(),
        authorized: vec![key.public_key().clone()],
        allow: vec![],
        name: "sim-node".into(),
    };
    let sshd = SimSshd::start(listener, config, token.clone());
    let addr = sshd.local_addr();
    token.cancel();
    timeout(T, sshd.shutdown()).await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
