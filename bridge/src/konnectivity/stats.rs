//! Counters of the Konnectivity path of one node.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by the node's dials and streams.
#[derive(Debug, Default)]
pub(crate) struct NodeStats {
    pub(crate) open_streams: AtomicU64,
    pub(crate) bytes_to_node: AtomicU64,
    pub(crate) bytes_from_node: AtomicU64,
    pub(crate) dials_ok: AtomicU64,
    pub(crate) dials_unavailable: AtomicU64,
    pub(crate) dials_refused: AtomicU64,
    pub(crate) dials_timeout: AtomicU64,
    pub(crate) dials_abandoned: AtomicU64,
    pub(crate) overflow_closes: AtomicU64,
}

/// A snapshot of the Konnectivity path's counters for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Streams open now.
    pub open_streams: u64,
    /// Bytes sent to targets behind the node (DATA to agents).
    pub bytes_to_node: u64,
    /// Bytes received from targets behind the node and read by clients.
    pub bytes_from_node: u64,
    /// Dials answered with a connection.
    pub dials_ok: u64,
    /// Dials failed because no agent was connected (or it vanished): 503.
    pub dials_unavailable: u64,
    /// Dials the agent refused or failed: 502.
    pub dials_refused: u64,
    /// Dials the agent reported as timed out: 504.
    pub dials_timeout: u64,
    /// Dials given up before the answer (DIAL_CLS sent).
    pub dials_abandoned: u64,
    /// Connections closed because their reader fell too far behind.
    pub overflow_closes: u64,
}

impl NodeStats {
    /// The current values.
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            open_streams: get(&self.open_streams),
            bytes_to_node: get(&self.bytes_to_node),
            bytes_from_node: get(&self.bytes_from_node),
            dials_ok: get(&self.dials_ok),
            dials_unavailable: get(&self.dials_unavailable),
            dials_refused: get(&self.dials_refused),
            dials_timeout: get(&self.dials_timeout),
            dials_abandoned: get(&self.dials_abandoned),
            overflow_closes: get(&self.overflow_closes),
        }
    }
}
