//! `[egress] stream_idle_timeout`: a stream of either path that carries no
//! byte in either direction for the limit ends with an error naming it, so
//! a connection whose client and target both went silent (a peer that
//! vanished without a FIN) does not stay open forever. Off by default:
//! `kubectl logs -f` or an idle `kubectl exec` shell may be silent for hours.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::path::BoxStream;

/// `stream`, ended after `limit` without traffic; unchanged for `None`.
pub fn limit(stream: BoxStream, limit: Option<Duration>) -> BoxStream {
    match limit {
        Some(limit) => Box::new(IdleLimited {
            inner: stream,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        }),
        None => stream,
    }
}

/// A stream with an idle limit; any byte read or written restarts it.
struct IdleLimited {
    inner: BoxStream,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
}

impl IdleLimited {
    fn touch(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.limit);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.timer.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "stream closed: no bytes either way for {:?} ([egress] stream_idle_timeout)",
                    self.limit
                ),
            )
        })
    }
}

impl AsyncRead for IdleLimited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for IdleLimited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.touch();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(e) => Poll::Ready(e),
            Poll::Pending => match self.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_silent_stream_ends_and_a_busy_one_does_not() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut s = limit(Box::new(a), Some(Duration::from_millis(200)));
        // Traffic every 50 ms keeps it open past the limit.
        for _ in 0..8 {
            b.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            s.read_exact(&mut one).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("ends within the limit")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("stream_idle_timeout"), "{err}");
        // The last byte was 50 ms before `started`: the rest of the limit remains.
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
