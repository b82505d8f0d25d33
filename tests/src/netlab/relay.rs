//! A TCP relay that delays every chunk it forwards by `delay ± jitter`,
//! keeping the byte order: the stand-in for `netem delay` on kernels
//! without it. It listens on a loopback address of its own and forwards
//! each connection to one target (a node's sshd in its namespace).

use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::net;

/// Largest chunk read (and delayed) at once.
const CHUNK: usize = 16 * 1024;
/// Chunks in flight per direction before the relay stops reading.
const IN_FLIGHT: usize = 256;

/// A running relay; dropping it closes the listener and every connection.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Relay {
    /// Forwards connections on a fresh loopback address to `target`, each
    /// chunk delayed by `delay` ± `jitter` (uniform), in order.
    pub async fn start(
        target: SocketAddr,
        delay: Duration,
        jitter: Duration,
    ) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind(SocketAddr::new(net::host(net::block(), 1), 0)).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let inbound = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(Ok(outbound)) =
                        tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target))
                            .await
                    else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = async {
                            tokio::join!(pipe(ri, wo, delay, jitter), pipe(ro, wi, delay, jitter))
                        } => {}
                    }
                });
            }
        });
        Ok(Relay { addr, shutdown })
    }

    /// Where it listens (the `ssh_address` to give the bridge).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One direction: reads chunks, stamps each with when it may leave (never
/// earlier than the one before it), writes them at that time.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    jitter: Duration,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let reader = async move {
        let mut last = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.truncate(n);
            let spread = jitter.as_micros() as i64;
            let offset = rand::thread_rng().gen_range(-spread..=spread);
            let wait = (delay.as_micros() as i64 + offset).max(0) as u64;
            let due = (Instant::now() + Duration::from_micros(wait)).max(last);
            last = due;
            if tx.send((due, buf)).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, buf)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
