//! The daemon as the migration sees it: a list of nodes, a probe per path,
//! live counters per path, and a route switch. Nothing else crosses over.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sshbridge_config::Route;

/// One node as the daemon sees it right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Node name, as in the config.
    pub name: String,
    /// The node's SSH session is established and its path is up.
    pub ssh_up: bool,
    /// Konnectivity agents connected for this node.
    pub agents_connected: u32,
    /// Of those, agents whose path currently probes healthy.
    pub agents_healthy: u32,
    /// The path that serves the node's new streams now.
    pub route: Route,
}

/// The outcome of one probe of one path (kubelet `/healthz`, or whatever the
/// daemon's health prober checks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSample {
    /// Time from start to answer (or to failure).
    #[serde(with = "crate::settings::duration_str")]
    pub latency: Duration,
    /// Why it failed; `None` when it succeeded.
    pub error: Option<String>,
}

impl ProbeSample {
    /// A successful probe that took `latency`.
    pub fn ok(latency: Duration) -> Self {
        ProbeSample {
            latency,
            error: None,
        }
    }

    /// A failed probe.
    pub fn failed(latency: Duration, error: impl Into<String>) -> Self {
        ProbeSample {
            latency,
            error: Some(error.into()),
        }
    }

    /// Whether the probe succeeded.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Monotonic counters of one path of one node since the daemon started. The
/// controller only ever looks at differences between two readings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveCounters {
    /// Streams dialed through the path successfully.
    pub dials_ok: u64,
    /// Dials through the path that failed.
    pub dials_failed: u64,
    /// Health probes of the path (the daemon's own prober) that succeeded.
    pub probes_ok: u64,
    /// Health probes of the path that failed.
    pub probes_failed: u64,
    /// The last error seen on the path, for the rollback reason.
    pub last_error: Option<String>,
}

/// The daemon refused or failed to change a node's route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot route node {node} over {route}: {reason}")]
pub struct RouteError {
    /// The node.
    pub node: String,
    /// The route that was asked for.
    pub route: Route,
    /// What went wrong, and what to do.
    pub reason: String,
}

/// What the migration controller needs from the daemon. The daemon
/// implements it over its router, health prober and metrics; tests implement
/// it with a fake.
pub trait Fleet: Send + Sync + 'static {
    /// Every node in the daemon's current config.
    fn nodes(&self) -> Vec<NodeView>;

    /// Probe `path` of `node` once. The controller bounds the future with
    /// [`Settings::probe_timeout`](crate::Settings::probe_timeout).
    fn probe(&self, node: &str, path: Route) -> impl Future<Output = ProbeSample> + Send;

    /// Live counters of `path` of `node`; all zero for an unknown node.
    fn live(&self, node: &str, path: Route) -> LiveCounters;

    /// Send `node`'s new streams over `route` from now on. Open streams stay
    /// on the path they started on, and the SSH session is kept either way.
    fn set_route(&self, node: &str, route: Route) -> Result<(), RouteError>;

    /// What the other bridges of the control plane say of `node` (health
    /// across bridges). None by default: a single bridge decides alone.
    fn peers(&self, _node: &str) -> Vec<crate::peers::PeerView> {
        Vec::new()
    }
}
