//! Copies one accepted `direct-tcpip` channel to its target and back, with
//! half-close in both directions, counting bytes as they move.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use russh::server::Msg;
use russh::Channel;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::Shared;

/// Relays until both directions reached end of stream, either side failed,
/// or the server shuts down. Dropping the channel stream closes the channel.
pub(super) async fn run(channel: Channel<Msg>, target: TcpStream, shared: &Shared) {
    let _ = target.set_nodelay(true);
    let mut target = Counted {
        inner: target,
        read: &shared.counters.bytes_from_targets,
        written: &shared.counters.bytes_to_targets,
    };
    let mut channel = channel.into_stream();
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut channel, &mut target) => {
            if let Err(e) = copied {
                tracing::debug!(node = %shared.name, error = %e, "relay ended with an error");
            }
        }
        _ = shared.shutdown.cancelled() => {}
    }
}

/// A stream that adds the bytes read from and written to it to two counters,
/// so the stats are live while a long stream is still open.
struct Counted<'a, S> {
    inner: S,
    read: &'a AtomicU64,
    written: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
