//! The two-write exchange on loopback: a target with Nagle on answers a
//! 64-byte request with a 200-byte head and a 1,000-byte body in two
//! writes. Read through [`QuickAck`], every answer arrives at once; read
//! through a bare socket, Linux's delayed ACK holds the body ~40 ms.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::QuickAck;

const EXCHANGES: usize = 50;
/// Far above a loopback exchange on a loaded machine, far below the
/// 40 ms minimum of Linux's delayed ACK.
const BOUND: Duration = Duration::from_millis(20);

/// A target that leaves Nagle on (as OpenSSH's sshd does without a pty)
/// and answers each 64-byte request in two writes.
async fn target() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let (head, body) = (vec![b'h'; 200], vec![b'b'; 1000]);
        let mut req = [0u8; 64];
        while s.read_exact(&mut req).await.is_ok() {
            if s.write_all(&head).await.is_err() || s.write_all(&body).await.is_err() {
                return;
            }
        }
    });
    addr
}

/// Runs the exchanges over `s`; returns the sorted round-trip times.
async fn exchanges<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Vec<Duration> {
    let mut answer = vec![0u8; 1200];
    let mut times = Vec::with_capacity(EXCHANGES);
    for _ in 0..EXCHANGES {
        let t = Instant::now();
        s.write_all(&[b'q'; 64]).await.unwrap();
        s.read_exact(&mut answer).await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    times
}

fn p99(times: &[Duration]) -> Duration {
    times[(times.len() * 99 / 100).min(times.len() - 1)]
}

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

#[tokio::test]
async fn two_write_answers_arrive_without_the_delayed_ack_stall() {
    let run = async {
        let with = exchanges(QuickAck::new(connect(target().await).await)).await;
        // The same exchange over a bare socket shows the stall this
        // module exists for; if it does not, the test proves nothing.
        let without = exchanges(connect(target().await).await).await;
        (with, without)
    };
    let (with, without) = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("exchanges finished within 30 s");
    assert!(
        p99(&without) >= BOUND,
        "a bare socket should show the delayed-ACK stall (p99 {:?})",
        p99(&without)
    );
    assert!(
        p99(&with) < BOUND,
        "p99 through QuickAck {:?} (bare socket: {:?})",
        p99(&with),
        p99(&without)
    );
}
