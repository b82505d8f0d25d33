//! Prompt ACKs on the sockets whose peer we cannot change.
//!
//! A peer that leaves Nagle's algorithm on (OpenSSH's sshd does for every
//! session without a pty; so do many targets) holds its second small
//! write until its first is acknowledged. Linux delays that ACK by up to
//! 40 ms once a connection looks interactive ("pingpong" mode: we sent
//! data shortly after receiving some). Together: a 200-byte head and its
//! body, written one after the other, arrive 40 ms apart.
//!
//! `TCP_QUICKACK` is not sticky: the kernel leaves quick-ACK mode again
//! on its own. So [`QuickAck`] re-arms it after every read that returned
//! data; setting it also sends an ACK the kernel was holding back, so the
//! peer's Nagle releases its next segment at once. Its cost is one
//! `setsockopt` per read; reads under bulk load are large, so that is
//! small next to the bytes they move.

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Asks the kernel to acknowledge what `socket` has received now, and to
/// leave delayed-ACK (pingpong) mode until it decides to enter it again.
/// Errors (not a TCP socket, closed) are ignored: the ACK is an
/// optimisation, never a reason to fail a stream.
pub fn rearm(socket: &impl AsFd) {
    let _ = socket2::SockRef::from(socket).set_tcp_quickack(true);
}

/// A byte stream over a TCP socket that re-arms `TCP_QUICKACK` after each
/// read that returned data (see the module docs). Writes pass through.
#[derive(Debug)]
pub struct QuickAck<S> {
    inner: S,
}

impl<S: AsFd> QuickAck<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        QuickAck { inner }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the socket.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + AsFd + Unpin> AsyncRead for QuickAck<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            rearm(&self.inner);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for QuickAck<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests;
