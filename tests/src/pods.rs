//! Servers that stand in for pods (and the node-local services) behind a
//! node: each listens on its own 127.x address so routing mistakes show.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What a pod server does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Echoes every byte; after the client's EOF it finishes echoing and
    /// closes its write side.
    Echo,
    /// Reads to EOF, then answers the hex SHA-256 of what it read and closes.
    Hash,
    /// Writes an endless stream of little-endian `u64` counters (0, 1, 2,
    /// ...) and never reads; [`FirehoseCheck`] verifies what arrives.
    Firehose,
    /// Writes `bye\n`, closes its write side at once, then reads to EOF and
    /// records the SHA-256 of what arrived (see [`PodServer::received`]).
    CloseFirst,
    /// Answers each 64-byte request with a 200-byte head and then, 2 ms
    /// later (the time to compute it), a 1,000-byte body, in two writes
    /// as HTTP servers do; `nagle: false`
    /// sets `TCP_NODELAY` (as Go's and nginx's servers do by default).
    TwoWrites {
        /// Leave Nagle's algorithm on.
        nagle: bool,
    },
}

/// A running pod server. Stops when the cluster's shutdown token fires.
#[derive(Debug, Clone)]
pub struct PodServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
    sent: Arc<AtomicU64>,
}

impl PodServer {
    /// Binds `ip:0` and serves `behavior` until `shutdown`.
    pub async fn start(
        ip: IpAddr,
        behavior: Behavior,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((ip, 0)).await?;
        Self::serve_on(listener, behavior, shutdown)
    }

    /// Serves `behavior` on an already bound `listener` (one bound inside
    /// a network namespace, say) until `shutdown`.
    pub fn serve_on(
        listener: TcpListener,
        behavior: Behavior,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let server = PodServer {
            addr: listener.local_addr()?,
            received: Arc::default(),
            sent: Arc::default(),
        };
        let (received, sent) = (server.received.clone(), server.sent.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                };
                let (received, sent, shutdown) = (received.clone(), sent.clone(), shutdown.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = serve(stream, behavior, received, sent) => {}
                    }
                });
            }
        });
        Ok(server)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// For [`Behavior::CloseFirst`]: hex SHA-256 of each finished
    /// connection's input, in completion order.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().expect("poisoned").clone()
    }

    /// For [`Behavior::Firehose`]: bytes its connections have handed to
    /// the kernel so far, all connections together.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// Verifies a [`Behavior::Firehose`] stream read from its first byte:
/// every byte must be the one the pattern has at that offset, so a lost,
/// repeated or reordered chunk shows at once.
#[derive(Debug, Default)]
pub struct FirehoseCheck {
    offset: u64,
}

impl FirehoseCheck {
    /// Bytes verified so far.
    pub fn verified(&self) -> u64 {
        self.offset
    }

    /// Checks the next `data` of the stream.
    pub fn feed(&mut self, data: &[u8]) -> anyhow::Result<()> {
        for (i, &b) in data.iter().enumerate() {
            let at = self.offset + i as u64;
            let want = (at / 8).to_le_bytes()[(at % 8) as usize];
            anyhow::ensure!(
                b == want,
                "firehose byte {at} is {b:#04x}, the pattern has {want:#04x} there \
                 (bytes were lost, repeated or reordered)"
            );
        }
        self.offset += data.len() as u64;
        Ok(())
    }
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn serve(
    mut s: TcpStream,
    behavior: Behavior,
    received: Arc<Mutex<Vec<String>>>,
    sent: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    match behavior {
        Behavior::Echo => {
            let (mut r, mut w) = s.split();
            tokio::io::copy(&mut r, &mut w).await?;
            w.shutdown().await?;
        }
        Behavior::Hash => {
            let mut h = Sha256::new();
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            s.write_all(hex(&h.finalize()).as_bytes()).await?;
            s.shutdown().await?;
        }
        Behavior::Firehose => {
            // The buffer holds whole counters, so writes keep the pattern.
            let mut counter = 0u64;
            loop {
                for word in buf.chunks_exact_mut(8) {
                    word.copy_from_slice(&counter.to_le_bytes());
                    counter += 1;
                }
                s.write_all(&buf).await?;
                sent.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
        }
        Behavior::CloseFirst => {
            s.write_all(b"bye\n").await?;
            s.shutdown().await?;
            let mut h = Sha256::new();
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            received.lock().expect("poisoned").push(hex(&h.finalize()));
        }
        Behavior::TwoWrites { nagle } => {
            s.set_nodelay(!nagle)?;
            let (head, body) = (vec![b'h'; 200], vec![b'b'; 1000]);
            let mut req = [0u8; 64];
            while s.read_exact(&mut req).await.is_ok() {
                s.write_all(&head).await?;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                s.write_all(&body).await?;
                sent.fetch_add(1200, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}
