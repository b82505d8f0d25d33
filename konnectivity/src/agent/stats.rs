//! The agent's counters, shared by its sessions and read by
//! [`super::AgentHandle::stats`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one agent since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Streams established with the server.
    pub connects_total: u64,
    /// Connect attempts that failed.
    pub connect_failures_total: u64,
    /// Streams closed at once because they reached a server already held.
    pub duplicate_servers_total: u64,
    /// Distinct servers (`serverID`s) held now.
    pub servers_held: u64,
    /// Servers the agent should hold (the last `serverCount` received);
    /// 0 before the first server answered.
    pub servers_wanted: u64,
    /// DIAL_REQs received.
    pub dials_total: u64,
    /// Dials answered with an error (refused, timeout, not allowed).
    pub dial_failures_total: u64,
    /// Of those, refused by the allow-list without dialing.
    pub dials_denied_total: u64,
    /// Dials cancelled by DIAL_CLS before their answer.
    pub dials_cancelled_total: u64,
    /// Target connections open now.
    pub connections_open: u64,
    /// Connections closed because their target did not read.
    pub overflow_closes_total: u64,
    /// Bytes written to targets.
    pub bytes_to_targets_total: u64,
    /// Bytes read from targets.
    pub bytes_from_targets_total: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) connects: AtomicU64,
    pub(super) connect_failures: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) held: AtomicU64,
    pub(super) wanted: AtomicU64,
    pub(super) dials: AtomicU64,
    pub(super) dial_failures: AtomicU64,
    pub(super) dials_denied: AtomicU64,
    pub(super) dials_cancelled: AtomicU64,
    pub(super) open: AtomicU64,
    pub(super) overflow_closes: AtomicU64,
    pub(super) bytes_to: AtomicU64,
    pub(super) bytes_from: AtomicU64,
}

pub(super) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(super) fn snapshot(&self) -> AgentStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AgentStats {
            connects_total: get(&self.connects),
            connect_failures_total: get(&self.connect_failures),
            duplicate_servers_total: get(&self.duplicates),
            servers_held: get(&self.held),
            servers_wanted: get(&self.wanted),
            dials_total: get(&self.dials),
            dial_failures_total: get(&self.dial_failures),
            dials_denied_total: get(&self.dials_denied),
            dials_cancelled_total: get(&self.dials_cancelled),
            connections_open: get(&self.open),
            overflow_closes_total: get(&self.overflow_closes),
            bytes_to_targets_total: get(&self.bytes_to),
            bytes_from_targets_total: get(&self.bytes_from),
        }
    }
}
