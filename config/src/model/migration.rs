//! `[migration]` and its leader election.

use std::time::Duration;

/// A batch size: a node count or a percentage of the nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BatchSize {
    /// This many nodes per batch.
    Count(usize),
    /// This percentage of all nodes per batch, rounded up, at least one.
    Percent(f64),
}

/// `[migration]`
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// State store, e.g. `file:/var/lib/sshbridge/migration.json`.
    pub store: String,
    /// Nodes per batch.
    pub batch_size: BatchSize,
    /// Probes per path during shadow.
    pub shadow_probes: u32,
    /// Largest tolerated failure ratio of the new path.
    pub max_failure_ratio: f64,
    /// Largest tolerated konnectivity p99 / ssh p99.
    pub max_latency_ratio: f64,
    /// How long a cut-over node is watched before `done`.
    pub soak: Duration,
    /// `[migration.leader_election]`: set exactly when the store is
    /// `kubernetes:` (several bridges share it; one drives).
    pub leader_election: Option<LeaderElection>,
}

/// `[migration.leader_election]`: the Lease that picks the one bridge
/// driving a shared migration (kube-controller-manager's timing).
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderElection {
    /// The Lease's namespace; default: the record's.
    pub lease_namespace: String,
    /// The Lease's name; default: the record's name + `-leader`.
    pub lease_name: String,
    /// How long an unrenewed Lease stays held; whole seconds. Default 15s.
    pub lease_duration: Duration,
    /// How long a leader leads without a successful renewal. Default 10s.
    pub renew_deadline: Duration,
    /// How often electors try to acquire or renew. Default 2s.
    pub retry_period: Duration,
}
