//! The state of one `Connect` stream that its packet reader (`session.rs`)
//! and its connection tasks (`conn.rs`) share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Shared;
use crate::flow::{CreditGate, Extensions, StallBudget};
use crate::proto::Packet;

/// A target connection as the packet reader sees it.
pub(super) struct ConnEntry {
    /// Bytes towards the target. Taken (dropped) by CLOSE_REQ: the
    /// connection then writes what is queued and closes.
    pub tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// Bytes in `tx` not yet written to the target.
    pub queued: Arc<AtomicUsize>,
    /// Notified each time the target took queued bytes.
    pub drained: Arc<tokio::sync::Notify>,
    /// Cancelling it closes the connection at once; `error` says why.
    pub hard: CancellationToken,
    /// Cancelled by CLOSE_REQ: flush within the grace, then close.
    pub soft: CancellationToken,
    /// The error CLOSE_RSP carries after a hard close.
    pub error: Arc<OnceLock<String>>,
    /// Credit towards the server (extension `credit`).
    pub gate: Arc<CreditGate>,
    /// Bytes received and not yet granted back (extension `credit`).
    pub in_flight: Arc<AtomicUsize>,
    /// Compatibility mode: how long this target kept the stream waiting.
    pub budget: Arc<Mutex<StallBudget>>,
}

/// State of one stream, shared by its reader and its connection tasks.
pub(super) struct Session {
    pub shared: Arc<Shared>,
    /// To the server; connection tasks hold clones through `Arc<Session>`.
    pub out: mpsc::Sender<Packet>,
    pub conns: Mutex<HashMap<i64, ConnEntry>>,
    /// Dials in progress by `random`; cancelling one abandons that dial.
    pub pending: Mutex<HashMap<i64, CancellationToken>>,
    /// The last connectID given out; the next DIAL_REQ gets one more.
    pub next_id: AtomicI64,
    /// Cancelled when the stream ends: every dial and connection stops.
    pub cancel: CancellationToken,
    /// Dials and connections of this stream.
    pub tracker: TaskTracker,
    /// Extensions both sides announced.
    pub ext: Extensions,
    /// The server's receive window: each connection's initial credit.
    pub peer_window: usize,
}

/// A poisoned lock only means another task panicked mid-update of a map;
/// the map itself is still usable.
pub(super) use sshbridge_core::lock;

impl Session {
    /// Sends a packet; false when the stream is gone.
    pub async fn send(&self, p: Packet) -> bool {
        self.out.send(p).await.is_ok()
    }
}
