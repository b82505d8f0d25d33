//! A connection through an agent as a byte stream.
//!
//! Reads take DATA from the connection's own buffer, filled by the agent's
//! reader without waiting. Writes become DATA packets on the agent's shared,
//! bounded queue. Konnectivity has no half-close: shutting down the write
//! half only stops further writes, and the connection is closed (CLOSE_REQ)
//! when the stream is dropped. A client that half-closes therefore still
//! receives the target's answer until the target closes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use super::agent::{lock, Agent, CHUNK_OVERHEAD};
use super::proto::Packet;
use super::stats::NodeStats;

/// Largest DATA payload sent per packet.
pub(crate) const MAX_CHUNK: usize = 32 * 1024;

/// What the agent's reader hands a connection.
pub(crate) enum Inbound {
    /// Bytes from the target.
    Data(Bytes),
    /// The connection ended: cleanly (`None`) or with the reason.
    End(Option<String>),
}

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
}

impl KonnStream {
    pub(crate) fn new(
        agent: Arc<Agent>,
        connect_id: i64,
        rx: mpsc::UnboundedReceiver<Inbound>,
        (buffered, drained): (Arc<AtomicUsize>, Arc<tokio::sync::Notify>),
        stats: Arc<NodeStats>,
    ) -> KonnStream {
        stats.open_streams.fetch_add(1, Ordering::Relaxed);
        let sender = PollSender::new(agent.data_tx.clone());
        KonnStream {
            agent,
            connect_id,
            rx,
            buffered,
            drained,
            stats,
            sender,
            current: Bytes::new(),
            ended: None,
            write_shut: false,
        }
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
            match ready!(this.rx.poll_recv(cx)) {
                Some(Inbound::Data(data)) => {
                    this.buffered
                        .fetch_sub(data.len() + CHUNK_OVERHEAD, Ordering::AcqRel);
                    this.drained.notify_one();
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
        if ready!(this.sender.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(this.closed_error()));
        }
        let n = buf.len().min(MAX_CHUNK);
        if this
            .sender
            .send_item(Packet::data(this.connect_id, buf[..n].to_vec()))
            .is_err()
        {
            return Poll::Ready(Err(this.closed_error()));
        }
        this.stats
            .bytes_to_node
            .fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// No half-close in Konnectivity: later writes fail, the connection
    /// stays open for reading until the stream is dropped.
    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_shut = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for KonnStream {
    fn drop(&mut self) {
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
