//! What the hub does at its limits, published as it happens: hooks the
//! daemon hangs its metrics on (as `sshbridge-ssh`'s `TunnelEvents`). The
//! hub still counts for its own snapshot ([`crate::Stats`]) and knows
//! nothing of who listens. Called on the agents' reader tasks and from
//! dials and streams: implementations only count (atomics), never block.

/// A per-connection or per-agent limit a node's Konnectivity path hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Compatibility mode: a connection closed because its reader used up
    /// its stall budget.
    StallBudget,
    /// A connection closed because the agent sent past its credit window.
    CreditViolation,
    /// Compatibility mode: a connection closed because the target stayed
    /// silent for `half_close_idle` after the client's EOF.
    HalfCloseIdle,
    /// A dial refused because the agent had `max_connections_per_agent`
    /// connections open.
    ConnectionCap,
}

/// Listener of one node's Konnectivity events ([`crate::Hub::set_node_events`]).
pub trait NodeEvents: std::fmt::Debug + Send + Sync + 'static {
    /// The node's path hit `limit` once.
    fn limit_hit(&self, _limit: Limit) {}
}

/// Listener of the hub's own events ([`crate::Hub::set_events`]).
pub trait HubEvents: std::fmt::Debug + Send + Sync + 'static {
    /// An agent stream was ended because the agent stopped reading it
    /// (its control queue passed `max_queued_control`).
    fn agent_cut_for_control_backlog(&self) {}
}
