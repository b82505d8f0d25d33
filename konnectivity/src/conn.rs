//! One open connection through an agent, as its two sides share it: the
//! slot the agent's reader fills ([`ConnSlot`], in the agent's table) and
//! the handles the connection's stream reads from ([`ConnReader`]). Both
//! the agent ([`crate::peer`]) and the stream ([`crate::stream`]) depend on
//! this module; it depends on neither.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use super::flow::{CreditGate, StallBudget};
use super::stats::NodeStats;

/// Bookkeeping charged per buffered DATA chunk besides its bytes, so that a
/// flood of tiny chunks is bounded as well.
pub(crate) const CHUNK_OVERHEAD: usize = 64;

/// What the agent's reader hands a connection.
pub(crate) enum Inbound {
    /// Bytes from the target.
    Data(Bytes),
    /// The connection ended: cleanly (`None`) or with the reason.
    End(Option<String>),
}

/// The receiving side of one open connection, owned by the agent's table.
pub(crate) struct ConnSlot {
    /// Dropping it ends the connection's reads.
    pub(crate) tx: mpsc::UnboundedSender<Inbound>,
    /// Bytes (plus overhead) received and not yet taken by the reader side.
    pub(crate) buffered: Arc<AtomicUsize>,
    /// Notified each time the reader side takes bytes.
    pub(crate) drained: Arc<Notify>,
    /// The node the connection is for.
    pub(crate) stats: Arc<NodeStats>,
    /// Credit to send towards the agent (extension `credit`).
    pub(crate) gate: Arc<CreditGate>,
    /// Bytes received and not yet granted back (extension `credit`).
    pub(crate) in_flight: Arc<AtomicUsize>,
    /// Compatibility mode: how long this reader kept the stream waiting.
    pub(crate) budget: Arc<Mutex<StallBudget>>,
    /// The agent sent HALF_CLOSE: no more DATA will come.
    pub(crate) peer_done: bool,
}

/// The stream's side of one open connection: what it reads from and the
/// counters it shares with its [`ConnSlot`].
pub(crate) struct ConnReader {
    /// DATA and the end, as the agent's reader hands them over.
    pub(crate) rx: mpsc::UnboundedReceiver<Inbound>,
    /// See [`ConnSlot::buffered`].
    pub(crate) buffered: Arc<AtomicUsize>,
    /// See [`ConnSlot::drained`].
    pub(crate) drained: Arc<Notify>,
    /// See [`ConnSlot::stats`].
    pub(crate) stats: Arc<NodeStats>,
    /// See [`ConnSlot::gate`].
    pub(crate) gate: Arc<CreditGate>,
    /// See [`ConnSlot::in_flight`].
    pub(crate) in_flight: Arc<AtomicUsize>,
}

impl ConnSlot {
    /// A new connection of `stats`' node: the agent's first credit is
    /// `peer_window`, and `budget` limits how long its reader may keep the
    /// agent's stream waiting.
    pub(crate) fn open(
        stats: Arc<NodeStats>,
        peer_window: usize,
        budget: StallBudget,
    ) -> (ConnSlot, ConnReader) {
        let (tx, rx) = mpsc::unbounded_channel();
        let slot = ConnSlot {
            tx,
            buffered: Arc::new(AtomicUsize::new(0)),
            drained: Arc::new(Notify::new()),
            stats,
            gate: Arc::new(CreditGate::new(peer_window)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            budget: Arc::new(Mutex::new(budget)),
            peer_done: false,
        };
        let reader = ConnReader {
            rx,
            buffered: slot.buffered.clone(),
            drained: slot.drained.clone(),
            stats: slot.stats.clone(),
            gate: slot.gate.clone(),
            in_flight: slot.in_flight.clone(),
        };
        (slot, reader)
    }
}
