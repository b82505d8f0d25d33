//! A connection through an agent as a byte stream.
//!
//! Reads take DATA from the connection's own buffer, filled by the agent's
//! reader without waiting. Writes become DATA packets on the agent's shared,
//! bounded queue; with the `credit` extension a write first takes credit,
//! so a connection whose target stopped reading waits alone. Shutting down
//! the write half sends HALF_CLOSE when the agent speaks `half-close`;
//! otherwise (compatibility mode) it stops further writes and the reader
//! gets the target's bytes until the target stays silent for
//! `half_close_idle`, then the connection is closed. Dropping the stream
//! sends CLOSE_REQ.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use super::conn::{Inbound, CHUNK_OVERHEAD};
use super::flow::{grant_batch, CreditGate};
use super::peer::{lock, Agent, Opened};
use super::proto::Packet;
use super::stats::NodeStats;

/// Largest DATA payload sent per packet.
pub(crate) const MAX_CHUNK: usize = 32 * 1024;

/// One connection through an agent. Dropping it sends CLOSE_REQ unless the
/// agent closed it first.
pub(crate) struct KonnStream {
    agent: Arc<Agent>,
    connect_id: i64,
    rx: mpsc::UnboundedReceiver<Inbound>,
    buffered: Arc<AtomicUsize>,
    /// Tells the agent's stream reader that bytes were taken.
    drained: Arc<tokio::sync::Notify>,
    stats: Arc<NodeStats>,
    sender: PollSender<Packet>,
    current: Bytes,
    /// Set once the reader saw the end; later reads repeat it.
    ended: Option<Option<String>>,
    write_shut: bool,
    /// Credit towards the agent (extension `credit`).
    gate: Arc<CreditGate>,
    /// Credit taken from `gate` and not yet used.
    credit: usize,
    /// Bytes received and not granted back (extension `credit`).
    in_flight: Arc<AtomicUsize>,
    /// Bytes taken by the reader since the last CREDIT.
    consumed: usize,
    /// HALF_CLOSE is owed to the agent (queued when the data queue has room).
    half_close_pending: bool,
    /// Compatibility mode after our EOF: closes a silent connection.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl KonnStream {
    /// The stream of a connection the agent opened: from here on,
    /// dropping it closes the connection.
    pub(crate) fn new(opened: Opened) -> KonnStream {
        let (agent, connect_id, reader) = opened.take();
        reader.stats.open_streams.fetch_add(1, Ordering::Relaxed);
        let sender = PollSender::new(agent.data_tx.clone());
        KonnStream {
            agent,
            connect_id,
            rx: reader.rx,
            buffered: reader.buffered,
            drained: reader.drained,
            stats: reader.stats,
            sender,
            current: Bytes::new(),
            ended: None,
            write_shut: false,
            gate: reader.gate,
            credit: 0,
            in_flight: reader.in_flight,
            consumed: 0,
            half_close_pending: false,
            linger: None,
        }
    }

    /// Extension `credit`: grants the agent what the reader took, a batch
    /// at a time.
    fn took(&mut self, n: usize) {
        if !self.agent.ext.credit {
            return;
        }
        self.consumed += n;
        if self.consumed >= grant_batch(self.agent.limits.window) {
            let bytes = std::mem::take(&mut self.consumed);
            self.in_flight.fetch_sub(bytes, Ordering::AcqRel);
            self.agent
                .control(Packet::credit(self.connect_id, bytes as u64));
        }
    }

    /// Compatibility mode: the target stayed silent for `half_close_idle`
    /// after our EOF. Close the connection; the reader sees EOF.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(linger) = &mut self.linger else {
            return Poll::Pending;
        };
        ready!(linger.as_mut().poll(cx));
        self.linger = None;
        if lock(&self.agent.conns).remove(&self.connect_id).is_some() {
            self.agent.control(Packet::close_request(self.connect_id));
            self.stats
                .half_close_idle_closes
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                agent = %self.agent.id, connect_id = self.connect_id,
                "closed: the target sent nothing for {:?} after the client's EOF \
                 (the agent has no half-close)", self.agent.limits.half_close_idle
            );
        }
        self.ended = Some(None);
        Poll::Ready(())
    }

    fn start_linger(&mut self, idle: Duration) {
        self.linger = Some(Box::pin(tokio::time::sleep(idle)));
    }

    fn closed_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!(
                "connection {} through Konnectivity agent {} is closed",
                self.connect_id, self.agent.id
            ),
        )
    }
}

impl AsyncRead for KonnStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.current.is_empty() {
            if let Some(end) = &this.ended {
                return Poll::Ready(match end {
                    None => Ok(()),
                    Some(reason) => Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        reason.clone(),
                    )),
                });
            }
            let next = match this.rx.poll_recv(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    ready!(this.poll_linger(cx));
                    continue;
                }
            };
            match next {
                Some(Inbound::Data(data)) => {
                    this.buffered
                        .fetch_sub(data.len() + CHUNK_OVERHEAD, Ordering::AcqRel);
                    this.drained.notify_one();
                    this.took(data.len());
                    if this.linger.is_some() {
                        this.start_linger(this.agent.limits.half_close_idle);
                    }
                    this.current = data;
                }
                Some(Inbound::End(reason)) => this.ended = Some(reason),
                None => {
                    this.ended = Some(Some(format!(
                        "Konnectivity agent {} went away",
                        this.agent.id
                    )))
                }
            }
        }
        let n = this.current.len().min(buf.remaining());
        buf.put_slice(&this.current[..n]);
        this.current.advance(n);
        this.stats
            .bytes_from_node
            .fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for KonnStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.write_shut || !lock(&this.agent.conns).contains_key(&this.connect_id) {
            return Poll::Ready(Err(this.closed_error()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let want = buf.len().min(MAX_CHUNK);
        if this.agent.ext.credit && this.credit == 0 {
            this.credit = ready!(this.gate.poll_take(cx, want));
            if !lock(&this.agent.conns).contains_key(&this.connect_id) {
                return Poll::Ready(Err(this.closed_error()));
            }
        }
        if ready!(this.sender.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(this.closed_error()));
        }
        let n = if this.agent.ext.credit {
            want.min(this.credit)
        } else {
            want
        };
        if this
            .sender
            .send_item(Packet::data(this.connect_id, buf[..n].to_vec()))
            .is_err()
        {
            return Poll::Ready(Err(this.closed_error()));
        }
        if this.agent.ext.credit {
            this.credit -= n;
        }
        this.stats
            .bytes_to_node
            .fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// With `half-close`: HALF_CLOSE goes behind the DATA already queued.
    /// Without: later writes fail, and the connection stays open for
    /// reading until the target has been silent for `half_close_idle`.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.write_shut {
            this.write_shut = true;
            this.half_close_pending = this.agent.ext.half_close;
            if !this.agent.ext.half_close && this.ended.is_none() {
                this.start_linger(this.agent.limits.half_close_idle);
                // Arm the timer even if nobody reads now.
                let _ = this.poll_linger(cx);
            }
        }
        if this.half_close_pending {
            if !lock(&this.agent.conns).contains_key(&this.connect_id) {
                this.half_close_pending = false;
                return Poll::Ready(Ok(()));
            }
            if ready!(this.sender.poll_reserve(cx)).is_err() {
                this.half_close_pending = false;
                return Poll::Ready(Err(this.closed_error()));
            }
            let _ = this.sender.send_item(Packet::half_close(this.connect_id));
            this.half_close_pending = false;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for KonnStream {
    fn drop(&mut self) {
        if self.credit > 0 {
            self.gate.put_back(self.credit);
        }
        self.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
        if lock(&self.agent.conns).remove(&self.connect_id).is_some() {
            self.agent.control(Packet::close_request(self.connect_id));
        }
        // The agent's stream may be waiting for room in this connection
        // (`Agent::room_for`): it is gone, so stop waiting now rather than
        // hold every other connection of the agent until `stall_timeout`.
        self.drained.notify_one();
    }
}
