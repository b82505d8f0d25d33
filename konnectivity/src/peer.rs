//! One connected agent: its outbound queues, its pending dials and its
//! open connections. What it sends is handled in [`reader`].
//!
//! With the `credit` extension the reader never waits: each connection
//! receives at most the window it granted, and grants more as its reader
//! takes bytes. In compatibility mode (an upstream agent) the reader waits
//! for a connection whose buffer is full, within that connection's stall
//! budget (see the module doc of [`crate`]). Every packet the
//! reader sends back (CLOSE_REQ, CLOSE_RSP, CREDIT) goes through the control
//! queue, which is bounded by a count: an agent that lets it grow past
//! [`Limits::max_queued_control`] stopped reading and is disconnected.

mod reader;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::conn::{ConnReader, ConnSlot, Inbound};
use super::flow::Extensions;
use super::identifiers::Identifiers;
use super::proto::Packet;
use super::stats::NodeStats;

/// Packets queued towards one agent for DIAL_REQ and DATA. When full,
/// writers wait: the agent's own link is slow, which TCP would do too.
pub(crate) const DATA_QUEUE: usize = 64;

/// The answer to a DIAL_REQ as the reader hands it to the dialer.
pub(crate) enum DialAnswer {
    /// The agent connected; the connection is registered already.
    Connected(Opened),
    /// The agent's error text.
    Failed(String),
}

/// A dial waiting for its DIAL_RSP.
pub(crate) struct PendingDial {
    /// Dropping it (agent gone) makes the dialer see the agent vanish.
    pub(crate) answer: oneshot::Sender<DialAnswer>,
    /// The node the dial is for.
    pub(crate) stats: Arc<NodeStats>,
}

/// The limits an agent stream runs under (from [`super::Options`] and
/// [`super::Flow`], plus the peer's announced window).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Compatibility mode: most bytes buffered per connection before the
    /// stream waits.
    pub(crate) max_conn_buffer: usize,
    /// Compatibility mode: total waiting one reader may cause per window.
    pub(crate) stall_timeout: Duration,
    /// The window of `stall_timeout`.
    pub(crate) stall_window: Duration,
    /// Our receive window per connection (extension `credit`).
    pub(crate) window: usize,
    /// The agent's receive window per connection: our initial credit.
    pub(crate) peer_window: usize,
    /// Most connections open through the agent at once.
    pub(crate) max_connections: usize,
    /// Most control packets queued towards the agent.
    pub(crate) max_queued_control: usize,
    /// Compatibility mode: after the client's EOF, how long the target
    /// may stay silent before the connection is closed.
    pub(crate) half_close_idle: Duration,
}

/// One agent stream.
pub(crate) struct Agent {
    /// `agentID`.
    pub(crate) id: String,
    /// `agentIdentifiers`.
    pub(crate) identifiers: Identifiers,
    /// Distinguishes this stream from an older one of the same agent ID.
    pub(crate) serial: u64,
    /// When the stream was accepted.
    pub(crate) since: SystemTime,
    /// Set by DRAIN.
    pub(crate) draining: AtomicBool,
    /// DIAL_REQ and DATA towards the agent; dropping every sender ends the queue.
    pub(crate) data_tx: mpsc::Sender<Packet>,
    /// CLOSE_REQ, CLOSE_RSP, DIAL_CLS: never waits, so it is usable from
    /// `Drop` and from the reader.
    pub(crate) control_tx: mpsc::UnboundedSender<Packet>,
    /// Dials by their `random`.
    pub(crate) pending: Mutex<HashMap<i64, PendingDial>>,
    /// Open connections by connectID.
    pub(crate) conns: Mutex<HashMap<i64, ConnSlot>>,
    /// Cancelled when the stream is gone or replaced: ends the outbound
    /// stream and fails everything in flight.
    pub(crate) ended: CancellationToken,
    /// Extensions both sides announced.
    pub(crate) ext: Extensions,
    /// Limits of this stream.
    pub(crate) limits: Limits,
    /// Control packets queued and not yet taken by the outbound stream.
    pub(crate) queued_control: AtomicUsize,
    /// Hub-wide counters of limits hit.
    pub(crate) hits: Arc<super::stats::LimitHits>,
}

impl Agent {
    /// A new agent and the receiving ends of its two outbound queues.
    pub(crate) fn new(
        id: String,
        identifiers: Identifiers,
        serial: u64,
        (ext, limits, hits): (Extensions, Limits, Arc<super::stats::LimitHits>),
    ) -> (
        Arc<Agent>,
        mpsc::Receiver<Packet>,
        mpsc::UnboundedReceiver<Packet>,
    ) {
        let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let agent = Arc::new(Agent {
            id,
            identifiers,
            serial,
            since: SystemTime::now(),
            draining: AtomicBool::new(false),
            data_tx,
            control_tx,
            pending: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            ended: CancellationToken::new(),
            ext,
            limits,
            queued_control: AtomicUsize::new(0),
            hits,
        });
        (agent, data_rx, control_rx)
    }

    /// Whether the agent asked to be preferred less.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Open connections through this agent.
    pub(crate) fn open_connections(&self) -> usize {
        lock(&self.conns).len()
    }

    /// Queues a control packet; a vanished agent needs none. An agent
    /// that lets more than `max_queued_control` pile up has stopped
    /// reading its stream and is disconnected.
    pub(crate) fn control(&self, packet: Packet) {
        let queued = self.queued_control.fetch_add(1, Ordering::AcqRel) + 1;
        if queued > self.limits.max_queued_control {
            if !self.ended.is_cancelled() {
                self.hits.control_backlog.fetch_add(1, Ordering::Relaxed);
                warn!(
                    agent = %self.id,
                    "Konnectivity agent {} disconnected: {queued} control packets queued and not read \
                     (limit [konnectivity] max_queued_control = {}); the agent stopped reading its stream",
                    self.id, self.limits.max_queued_control
                );
                self.end("it stopped reading its stream (control queue full)");
            }
            return;
        }
        let _ = self.control_tx.send(packet);
    }

    /// Whether another connection may open through this agent.
    pub(crate) fn has_room(&self) -> bool {
        self.open_connections() < self.limits.max_connections
    }

    /// Ends the stream: pending dials fail and open connections end with
    /// `reason`, at once.
    pub(crate) fn end(&self, reason: &str) {
        // Cancel first: a dial that registers after the drain below sees it.
        self.ended.cancel();
        let pending: Vec<_> = lock(&self.pending).drain().collect();
        drop(pending);
        let conns: Vec<_> = lock(&self.conns).drain().collect();
        for (_, slot) in conns {
            let _ = slot.tx.send(Inbound::End(Some(format!(
                "Konnectivity agent {} went away: {reason}",
                self.id
            ))));
        }
    }
}

/// A connection the agent opened, registered in its table and not yet
/// taken by its dialer. Dropped untaken (the dialer gave up meanwhile), it
/// closes the connection: CLOSE_REQ goes to the agent.
pub(crate) struct Opened {
    agent: Arc<Agent>,
    connect_id: i64,
    reader: Option<ConnReader>,
}

impl Opened {
    /// The agent, the connectID and the reading side, for the stream.
    pub(crate) fn take(mut self) -> (Arc<Agent>, i64, ConnReader) {
        let reader = self.reader.take().expect("taken once");
        (self.agent.clone(), self.connect_id, reader)
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        if self.reader.is_some() && lock(&self.agent.conns).remove(&self.connect_id).is_some() {
            self.agent.control(Packet::close_request(self.connect_id));
        }
    }
}

/// Locks a table; a panic elsewhere never leaves it half-updated, so a
/// poisoned lock is still consistent.
pub(crate) use sshbridge_core::lock;
