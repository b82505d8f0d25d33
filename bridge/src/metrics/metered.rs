//! A dialed stream that counts itself: one in `sshbridge_streams_active`
//! from dial to drop, and its bytes each way as they pass.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use sshbridge_core::metrics::{Counter, Gauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::path::BoxStream;

pub(super) struct Metered {
    inner: BoxStream,
    active: Gauge,
    sent: Counter,
    received: Counter,
}

impl Metered {
    pub(super) fn new(inner: BoxStream, active: Gauge, sent: Counter, received: Counter) -> Self {
        active.inc();
        Metered {
            inner,
            active,
            sent,
            received,
        }
    }

    fn count_sent(&self, res: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = res {
            self.sent.inc_by(*n as u64);
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.active.dec();
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.received.inc_by(n as u64);
        }
        res
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        self.count_sent(&res);
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count_sent(&res);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
