//! One dialed stream over one direct-tcpip channel, with consumption-driven
//! flow control (see the `ssh` module doc): a pump task always drains the
//! channel into the stream's buffer, so the session loop never waits on
//! it, and gives the node window credit only for bytes the client has read.
//! The buffer therefore never holds more than one window
//! (`ssh.max_stream_buffer`); a node that sends past its window breaks the
//! protocol and gets the stream reset.
//!
//! The buffer is bounded in chunks too (`ssh.max_stream_chunks`): empty data
//! messages are dropped, and once the queue holds that many chunks it is
//! copied into one, so a node trickling one-byte messages costs memory in
//! proportion to the bytes, not to the messages (counted in
//! `sshbridge_ssh_stream_compactions_total`).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use futures::{Stream as FutStream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::Counters;

/// What a channel delivers to its pump.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// Bytes from the target.
    Data(Bytes),
    /// The target finished sending.
    Eof,
}

/// How a pump ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PumpEnd {
    /// The channel closed (remote close or session gone).
    Closed,
    /// The node sent past the window; `buffered` bytes were waiting.
    Reset { buffered: usize },
    /// The client dropped its stream.
    ReaderGone,
}

#[derive(Default)]
struct RecvState {
    chunks: VecDeque<Bytes>,
    len: usize,
    eof: bool,
    /// The channel is closed: writes fail instead of waiting for window.
    closed: bool,
    reset: Option<String>,
    waker: Option<Waker>,
    /// Bytes the client read that the node was not credited for yet.
    consumed: usize,
}

/// Bytes received for one stream, waiting for its client to read them.
pub(crate) struct RecvBuffer {
    state: Mutex<RecvState>,
    /// Most chunks queued before they are compacted into one.
    max_chunks: usize,
    /// Wakes the pump when the client consumed bytes (credit to return).
    credit: tokio::sync::Notify,
}

/// Where a pump returns window credit: the channel (via russh's
/// `window_on_consume` patch), or a test's simulated sender.
pub(crate) trait CreditSink: Send {
    /// Tells the node it may send `bytes` more.
    fn credit(&mut self, bytes: u32) -> impl std::future::Future<Output = ()> + Send;
}

impl Default for RecvBuffer {
    fn default() -> Self {
        RecvBuffer::new(RecvBuffer::DEFAULT_MAX_CHUNKS)
    }
}

/// What [`RecvBuffer::push`] did with a chunk.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued as it came (or dropped, being empty).
    Queued,
    /// Queued after the queue was compacted into one chunk.
    Compacted,
}

impl RecvBuffer {
    /// Default of `ssh.max_stream_chunks`.
    pub(crate) const DEFAULT_MAX_CHUNKS: usize = 1024;

    /// A buffer that compacts its queue at `max_chunks` chunks (at least 2).
    pub(crate) fn new(max_chunks: usize) -> Self {
        RecvBuffer {
            state: Mutex::default(),
            max_chunks: max_chunks.max(2),
            credit: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecvState> {
        sshbridge_core::lock(&self.state)
    }

    /// Queue `data`. Holding more than `limit` (the window) means the node
    /// ignored flow control: the stream is reset and the buffered byte
    /// count is returned as the error.
    fn push(&self, data: Bytes, limit: usize) -> Result<Pushed, usize> {
        let mut st = self.lock();
        if data.is_empty() {
            return Ok(Pushed::Queued);
        }
        let buffered = st.len + data.len();
        if buffered > limit {
            st.chunks.clear();
            st.len = 0;
            st.reset = Some(format!(
                "stream reset: the node sent past its window, {buffered} bytes buffered \
                 (ssh.max_stream_buffer = {limit})"
            ));
            wake(&mut st);
            return Err(buffered);
        }
        st.len = buffered;
        let mut pushed = Pushed::Queued;
        if st.chunks.len() >= self.max_chunks {
            // One copy of at most a window every `max_chunks` messages.
            let mut all = bytes::BytesMut::with_capacity(buffered);
            for c in st.chunks.drain(..) {
                all.extend_from_slice(&c);
            }
            st.chunks.push_back(all.freeze());
            pushed = Pushed::Compacted;
        }
        st.chunks.push_back(data);
        wake(&mut st);
        Ok(pushed)
    }

    /// Chunks queued now (for tests).
    #[cfg(test)]
    pub(crate) fn chunks(&self) -> usize {
        self.lock().chunks.len()
    }

    /// Credit owed to the node, reset to zero.
    fn take_consumed(&self) -> usize {
        std::mem::take(&mut self.lock().consumed)
    }

    fn finish(&self) {
        let mut st = self.lock();
        st.eof = true;
        wake(&mut st);
    }

    fn close(&self) {
        let mut st = self.lock();
        st.eof = true;
        st.closed = true;
        wake(&mut st);
    }

    fn write_error(&self) -> Option<io::Error> {
        let st = self.lock();
        if let Some(r) = &st.reset {
            Some(io::Error::new(io::ErrorKind::ConnectionReset, r.clone()))
        } else if st.closed {
            Some(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream closed by the node (channel closed)",
            ))
        } else {
            None
        }
    }
}

fn wake(st: &mut RecvState) {
    if let Some(w) = st.waker.take() {
        w.wake();
    }
}

/// Drain `events` into `buf` until the channel ends or the client goes
/// away, returning credit to `sink` as the client reads. Never waits on the
/// client; waits on `sink` only to hand it credit.
pub(crate) async fn pump<S, C>(
    mut events: S,
    buf: &RecvBuffer,
    limit: usize,
    counters: &Counters,
    reader_gone: &CancellationToken,
    sink: &mut C,
) -> PumpEnd
where
    S: FutStream<Item = Incoming> + Unpin,
    C: CreditSink,
{
    let credit_step = (limit / 4).max(1);
    let mut owed = 0usize;
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = buf.credit.notified() => {
                // Credit goes to the session loop in quarter-window steps,
                // not per client read: at most a quarter window is held
                // back here, so the node always has credit left to send.
                owed += buf.take_consumed();
                if owed >= credit_step {
                    sink.credit(u32::try_from(owed).unwrap_or(u32::MAX)).await;
                    owed = 0;
                }
                continue;
            }
            _ = reader_gone.cancelled() => return PumpEnd::ReaderGone,
        };
        match ev {
            Some(Incoming::Data(data)) => {
                counters
                    .bytes_received
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                match buf.push(data, limit) {
                    Ok(Pushed::Queued) => {}
                    Ok(Pushed::Compacted) => {
                        counters.compacted();
                    }
                    Err(buffered) => return PumpEnd::Reset { buffered },
                }
            }
            // Half-close: reads end, writes keep working until Close.
            Some(Incoming::Eof) => buf.finish(),
            None => {
                buf.close();
                return PumpEnd::Closed;
            }
        }
    }
}

/// The client's end of one stream: reads from the pump's buffer, writes go
/// straight to the channel. Dropping it closes the channel.
pub(crate) struct SshStream {
    buf: Arc<RecvBuffer>,
    writer: Pin<Box<dyn AsyncWrite + Send>>,
    counters: Arc<Counters>,
    /// Cancelled on drop: tells the pump to close the channel.
    gone: CancellationToken,
}

impl SshStream {
    pub(crate) fn new(
        buf: Arc<RecvBuffer>,
        writer: Pin<Box<dyn AsyncWrite + Send>>,
        counters: Arc<Counters>,
        gone: CancellationToken,
    ) -> SshStream {
        SshStream {
            buf,
            writer,
            counters,
            gone,
        }
    }
}

impl Drop for SshStream {
    fn drop(&mut self) {
        self.gone.cancel();
    }
}

impl AsyncRead for SshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.buf.lock();
        if let Some(reason) = &st.reset {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                reason.clone(),
            )));
        }
        // `out` may arrive partly filled (tokio's copy keeps unflushed bytes
        // in it); only bytes added by this call count as progress.
        let before = out.filled().len();
        while out.remaining() > 0 {
            let Some(front) = st.chunks.front_mut() else {
                break;
            };
            let n = front.len().min(out.remaining());
            out.put_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                st.chunks.pop_front();
            }
            st.len -= n;
        }
        let read = out.filled().len() - before;
        if read > 0 {
            st.consumed += read;
            self.buf.credit.notify_one();
        }
        if read == 0 && !st.eof && out.remaining() > 0 {
            st.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.buf.write_error() {
            return Poll::Ready(Err(e));
        }
        let res = self.writer.as_mut().poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = res {
            self.counters
                .bytes_sent
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    /// Sends channel EOF to the target; reading keeps working.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
