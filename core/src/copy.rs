//! Moving a stream's bytes without paying for buffers it does not use.
//!
//! A profile of the bridge serving 64 clients that dial and close
//! (`perf record` during the bench's dial load, docs/bench.md) put about
//! 20% of its CPU in allocating the copy buffers of each stream: two
//! zero-filled 64 KiB buffers per CONNECT (`tokio::io::copy_bidirectional_with_sizes`),
//! most of it the memset and the page faults of memory glibc had handed
//! back to the kernel. Most streams carry a request and an answer of a
//! few KiB; only bulk transfers need large reads. So buffers here start
//! at [`START`], double whenever a read fills them, up to the caller's
//! maximum, and are read into without being zeroed first.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first buffer of each direction.
pub const START: usize = 4 * 1024;

/// Reads at most `max` bytes from `r` into `buf` (cleared first) without
/// zero-filling it; returns how many, 0 at end of stream.
pub async fn read_some<R>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> io::Result<usize>
where
    R: AsyncRead + Unpin + ?Sized,
{
    buf.clear();
    buf.reserve(max);
    r.take(max as u64).read_buf(buf).await
}

/// A read buffer that starts at [`START`] and doubles, up to `max`, each
/// time a read fills it.
pub struct Growing {
    buf: Vec<u8>,
    size: usize,
    max: usize,
}

impl Growing {
    /// A buffer growing up to `max` bytes (at least [`START`]).
    pub fn new(max: usize) -> Self {
        Growing {
            buf: Vec::new(),
            size: START.min(max.max(1)),
            max: max.max(1),
        }
    }

    /// Reads once from `r`; the bytes read, empty at end of stream.
    pub async fn read<R>(&mut self, r: &mut R) -> io::Result<&[u8]>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        self.read_up_to(r, usize::MAX).await
    }

    /// [`Growing::read`] of at most `limit` bytes (a flow-control credit).
    pub async fn read_up_to<R>(&mut self, r: &mut R, limit: usize) -> io::Result<&[u8]>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        let n = read_some(r, &mut self.buf, self.size.min(limit)).await?;
        if n == self.size && self.size < self.max {
            self.size = (self.size * 2).min(self.max);
        }
        Ok(&self.buf[..n])
    }

    /// What the last read returned.
    pub fn last(&self) -> &[u8] {
        &self.buf
    }

    /// The size of the next read.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// Copies `from` to `to` until `from` ends, then shuts `to` down; the
/// number of bytes copied.
async fn one_way<R, W>(from: &mut R, to: &mut W, max: usize) -> io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = Growing::new(max);
    let mut total = 0u64;
    loop {
        let chunk = buf.read(from).await?;
        if chunk.is_empty() {
            to.shutdown().await?;
            return Ok(total);
        }
        to.write_all(chunk).await?;
        to.flush().await?;
        total += chunk.len() as u64;
    }
}

/// Copies both ways between `a` and `b` as `tokio::io::copy_bidirectional`
/// does (the end of one direction shuts down the other side's write half,
/// the copy goes on the other way; an error ends both), with [`Growing`]
/// buffers of at most `max` bytes. Returns the bytes copied a -> b and
/// b -> a.
pub async fn bidirectional<A, B>(a: &mut A, b: &mut B, max: usize) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut a_rd, mut a_wr) = tokio::io::split(a);
    let (mut b_rd, mut b_wr) = tokio::io::split(b);
    tokio::try_join!(
        one_way(&mut a_rd, &mut b_wr, max),
        one_way(&mut b_rd, &mut a_wr, max)
    )
}

#[cfg(test)]
mod tests;
