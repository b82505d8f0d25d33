//! Counters of the Konnectivity path of one node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::events::{HubEvents, Limit, NodeEvents};
use sshbridge_core::lock;

/// Live counters, shared by the node's dials and streams, and the node's
/// event hook.
#[derive(Debug, Default)]
pub(crate) struct NodeStats {
    /// Told of every limit hit as it happens; replaced when the daemon
    /// starts the node again (a reload).
    pub(crate) events: Mutex<Option<Arc<dyn NodeEvents>>>,
    pub(crate) open_streams: AtomicU64,
    pub(crate) bytes_to_node: AtomicU64,
    pub(crate) bytes_from_node: AtomicU64,
    pub(crate) dials_ok: AtomicU64,
    pub(crate) dials_unavailable: AtomicU64,
    pub(crate) dials_refused: AtomicU64,
    pub(crate) dials_timeout: AtomicU64,
    pub(crate) dials_abandoned: AtomicU64,
    pub(crate) overflow_closes: AtomicU64,
    pub(crate) credit_violations: AtomicU64,
    pub(crate) half_close_idle_closes: AtomicU64,
    pub(crate) dials_over_connection_cap: AtomicU64,
}

/// Limits hit by agents, hub-wide (an agent may serve several nodes).
#[derive(Debug, Default)]
pub(crate) struct LimitHits {
    /// Agents disconnected because their control queue overflowed.
    pub(crate) control_backlog: AtomicU64,
    /// Told of each as it happens.
    pub(crate) events: Mutex<Option<Arc<dyn HubEvents>>>,
}

impl LimitHits {
    /// Counts an agent ended for its control backlog, and tells the hook.
    pub(crate) fn control_backlog(&self) {
        self.control_backlog.fetch_add(1, Ordering::Relaxed);
        if let Some(events) = lock(&self.events).as_ref() {
            events.agent_cut_for_control_backlog();
        }
    }
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
    /// Connections closed because their reader fell too far behind
    /// (compatibility mode: it used up its stall budget).
    pub overflow_closes: u64,
    /// Connections closed because the agent sent past their credit.
    pub credit_violations: u64,
    /// Compatibility mode: connections closed because the target stayed
    /// silent for `half_close_idle` after the client's EOF.
    pub half_close_idle_closes: u64,
    /// Dials refused because the agent had `max_connections_per_agent`
    /// connections open.
    pub dials_over_connection_cap: u64,
}

impl NodeStats {
    /// Counts one hit of `limit`, and tells the node's hook.
    pub(crate) fn hit(&self, limit: Limit) {
        let counter = match limit {
            Limit::StallBudget => &self.overflow_closes,
            Limit::CreditViolation => &self.credit_violations,
            Limit::HalfCloseIdle => &self.half_close_idle_closes,
            Limit::ConnectionCap => &self.dials_over_connection_cap,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(events) = lock(&self.events).as_ref() {
            events.limit_hit(limit);
        }
    }

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
            credit_violations: get(&self.credit_violations),
            half_close_idle_closes: get(&self.half_close_idle_closes),
            dials_over_connection_cap: get(&self.dials_over_connection_cap),
        }
    }
}
