//! The bridge's metric set: names, help texts, labels, buckets, and the
//! per-node / per-path handle bundles the daemon keeps next to each tunnel.

use std::sync::Arc;
use std::time::Duration;

use super::{Counter, Desc, Gauge, Histogram, Registry};
use crate::health::{PathState, ProbeErrorKind};
use crate::path::DialError;
use crate::ssh::{TunnelState, TunnelStats};

/// Bucket bounds of `sshbridge_dial_duration_seconds`: from a warm SSH
/// channel (~1 ms) to a dial that hits `dial_timeout` (10 s default).
pub const DIAL_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Bucket bounds of `sshbridge_probe_duration_seconds` (probe timeout is
/// at most 5 s by default).
pub const PROBE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const BUILD_INFO: Desc<1> = Desc {
    name: "sshbridge_build_info",
    help: "Always 1; the version label names the running sshbridge build.",
    labels: ["version"],
};
const TUNNELS: Desc<1> = Desc {
    name: "sshbridge_tunnels",
    help: "Number of nodes whose SSH tunnel is in each state.",
    labels: ["state"],
};
const TUNNEL_UP: Desc<2> = Desc {
    name: "sshbridge_tunnel_up",
    help: "1 while the node's path transport (SSH session, agent stream) is up, else 0.",
    labels: ["node", "path"],
};
const HANDSHAKES: Desc<1> = Desc {
    name: "sshbridge_handshakes_total",
    help: "SSH connection attempts to the node (established sessions plus failed handshakes).",
    labels: ["node"],
};
const HANDSHAKE_FAILURES: Desc<2> = Desc {
    name: "sshbridge_handshake_failures_total",
    help: "Failed SSH connection attempts to the node, by reason.",
    labels: ["node", "reason"],
};
const HOST_KEY_MISMATCHES: Desc<1> = Desc {
    name: "sshbridge_host_key_mismatches_total",
    help: "Times the node presented a host key that does not match known_hosts.",
    labels: ["node"],
};
const STREAM_COMPACTIONS: Desc<1> = Desc {
    name: "sshbridge_ssh_stream_compactions_total",
    help: "Times an SSH stream's receive queue reached ssh.max_stream_chunks and was compacted.",
    labels: ["node"],
};
const KONN_LIMIT_HITS: Desc<2> = Desc {
    name: "sshbridge_konnectivity_limit_hits_total",
    help: "Konnectivity connections of the node closed or dials refused by a limit: stall_budget \
           (a reader used up konnectivity.stall_timeout), credit_violation (the agent sent past a \
           connection's window), half_close_idle (compatibility mode: the target stayed silent after \
           the client's EOF), connection_cap (konnectivity.max_connections_per_agent).",
    labels: ["node", "limit"],
};
/// The `limit` label values of `sshbridge_konnectivity_limit_hits_total`.
const KONN_LIMITS: [&str; 4] = [
    "stall_budget",
    "credit_violation",
    "half_close_idle",
    "connection_cap",
];
const AGENTS_CUT: Desc<1> = Desc {
    name: "sshbridge_konnectivity_agents_disconnected_total",
    help: "Agent streams the bridge ended because a limit was hit: control_backlog (more than \
           konnectivity.max_queued_control control packets unread by the agent).",
    labels: ["reason"],
};
const TLS_REFUSED: Desc<1> = Desc {
    name: "sshbridge_tls_handshakes_refused_total",
    help: "Connections closed because the listener already ran max_tls_handshakes handshakes.",
    labels: ["listener"],
};
const TLS_TIMEOUTS: Desc<1> = Desc {
    name: "sshbridge_tls_handshake_timeouts_total",
    help: "TLS handshakes not finished within the listener's tls_handshake_timeout.",
    labels: ["listener"],
};
const RECONNECTS: Desc<1> = Desc {
    name: "sshbridge_reconnects_total",
    help: "Established SSH sessions to the node that were lost.",
    labels: ["node"],
};
const DIAL_DURATION: Desc<2> = Desc {
    name: "sshbridge_dial_duration_seconds",
    help: "Time to open a stream to a target through the node's path, successful or not.",
    labels: ["node", "path"],
};
const DIAL_FAILURES: Desc<3> = Desc {
    name: "sshbridge_dial_failures_total",
    help: "Dials that failed, by reason (forbidden dials match no node and carry empty node and path).",
    labels: ["node", "path", "reason"],
};
const STREAMS_ACTIVE: Desc<2> = Desc {
    name: "sshbridge_streams_active",
    help: "Streams open through the node's path now.",
    labels: ["node", "path"],
};
const BYTES_SENT: Desc<2> = Desc {
    name: "sshbridge_bytes_sent_total",
    help: "Bytes written by clients towards targets behind the node.",
    labels: ["node", "path"],
};
const BYTES_RECEIVED: Desc<2> = Desc {
    name: "sshbridge_bytes_received_total",
    help: "Bytes received from targets behind the node.",
    labels: ["node", "path"],
};
const PROBE_DURATION: Desc<2> = Desc {
    name: "sshbridge_probe_duration_seconds",
    help: "Duration of kubelet health probes through the node's path.",
    labels: ["node", "path"],
};
const PROBES: Desc<3> = Desc {
    name: "sshbridge_probes_total",
    help: "Kubelet health probes through the node's path, by result (ok or the failure kind).",
    labels: ["node", "path", "result"],
};
const PATH_STATE: Desc<3> = Desc {
    name: "sshbridge_path_state",
    help: "1 for the current health state of the node's path, 0 for the others.",
    labels: ["node", "path", "state"],
};

const TUNNEL_STATES: [TunnelState; 6] = [
    TunnelState::Connecting,
    TunnelState::Up,
    TunnelState::Backoff,
    TunnelState::Draining,
    TunnelState::Parked,
    TunnelState::Stopped,
];
const HANDSHAKE_REASONS: [&str; 5] = ["auth", "host_key", "timeout", "refused", "other"];

/// Why a dial failed, as counted in `sshbridge_dial_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialFailure {
    /// The path was not up (HTTP 503).
    Unavailable,
    /// The node could not reach the target (HTTP 502).
    Refused,
    /// No answer within the dial timeout (HTTP 504).
    Timeout,
    /// The target is not a node, pod or service address (HTTP 403).
    Forbidden,
}

impl DialFailure {
    const ALL: [DialFailure; 4] = [
        DialFailure::Unavailable,
        DialFailure::Refused,
        DialFailure::Timeout,
        DialFailure::Forbidden,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DialFailure::Unavailable => "unavailable",
            DialFailure::Refused => "refused",
            DialFailure::Timeout => "timeout",
            DialFailure::Forbidden => "forbidden",
        }
    }
}

impl From<&DialError> for DialFailure {
    fn from(e: &DialError) -> Self {
        match e {
            DialError::Unavailable { .. } => DialFailure::Unavailable,
            DialError::Refused { .. } => DialFailure::Refused,
            DialError::Timeout { .. } => DialFailure::Timeout,
        }
    }
}

/// The bridge's metrics. Cloning shares the registry.
#[derive(Debug, Clone)]
pub struct BridgeMetrics {
    registry: Arc<Registry>,
    tunnels: [Arc<Gauge>; TUNNEL_STATES.len()],
    forbidden: Arc<Counter>,
}

impl BridgeMetrics {
    /// A registry holding `sshbridge_build_info{version}` and every
    /// bridge-wide series at zero.
    pub fn new(version: &str) -> Self {
        let registry = Arc::new(Registry::new());
        registry.gauge(&BUILD_INFO, [version]).set(1.0);
        let tunnels = TUNNEL_STATES.map(|s| registry.gauge(&TUNNELS, [s.as_str()]));
        let forbidden = registry.counter(&DIAL_FAILURES, ["", "", DialFailure::Forbidden.as_str()]);
        BridgeMetrics {
            registry,
            tunnels,
            forbidden,
        }
    }

    /// The underlying registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The text exposition for `/metrics`.
    pub fn render(&self) -> String {
        self.registry.render()
    }

    /// Handles for one node's SSH-session counters, created at zero.
    pub fn node(&self, node: &str) -> NodeMetrics {
        let r = &self.registry;
        NodeMetrics {
            handshakes: r.counter(&HANDSHAKES, [node]),
            handshake_failures: HANDSHAKE_REASONS
                .map(|why| r.counter(&HANDSHAKE_FAILURES, [node, why])),
            host_key_mismatches: r.counter(&HOST_KEY_MISMATCHES, [node]),
            reconnects: r.counter(&RECONNECTS, [node]),
            stream_compactions: r.counter(&STREAM_COMPACTIONS, [node]),
            konn_limit_hits: KONN_LIMITS.map(|l| r.counter(&KONN_LIMIT_HITS, [node, l])),
        }
    }

    /// Handles for one node's path (`ssh` or `konnectivity`), created at zero.
    pub fn path(&self, node: &str, path: &'static str) -> PathMetrics {
        let r = &self.registry;
        PathMetrics {
            transport_up: r.gauge(&TUNNEL_UP, [node, path]),
            dial_duration: r.histogram(&DIAL_DURATION, DIAL_BUCKETS, [node, path]),
            dial_failures: DialFailure::ALL
                .map(|f| r.counter(&DIAL_FAILURES, [node, path, f.as_str()])),
            streams_active: r.gauge(&STREAMS_ACTIVE, [node, path]),
            bytes_sent: r.counter(&BYTES_SENT, [node, path]),
            bytes_received: r.counter(&BYTES_RECEIVED, [node, path]),
            probe_duration: r.histogram(&PROBE_DURATION, PROBE_BUCKETS, [node, path]),
            probes_ok: r.counter(&PROBES, [node, path, "ok"]),
            probes_failed: ProbeErrorKind::ALL
                .map(|k| r.counter(&PROBES, [node, path, k.as_str()])),
            state: PathState::ALL.map(|s| r.gauge(&PATH_STATE, [node, path, s.as_str()])),
        }
    }

    /// Sets `sshbridge_tunnels{state}` from the current state of every
    /// node's tunnel (states not listed count 0).
    pub fn set_tunnel_states(&self, states: impl IntoIterator<Item = TunnelState>) {
        let mut counts = [0u32; TUNNEL_STATES.len()];
        for s in states {
            if let Some(i) = TUNNEL_STATES.iter().position(|t| *t == s) {
                counts[i] += 1;
            }
        }
        for (g, n) in self.tunnels.iter().zip(counts) {
            g.set(f64::from(n));
        }
    }

    /// Mirrors the count of agent streams ended for an unread control
    /// backlog (`Hub::agents_cut_for_control_backlog`).
    pub fn set_agents_cut_for_control_backlog(&self, total: u64) {
        self.registry
            .counter(&AGENTS_CUT, ["control_backlog"])
            .set_at_least(total);
    }

    /// The refused and timed-out handshake counters of `listener`.
    pub fn tls_handshake_counters(&self, listener: &str) -> (Arc<Counter>, Arc<Counter>) {
        (
            self.registry.counter(&TLS_REFUSED, [listener]),
            self.registry.counter(&TLS_TIMEOUTS, [listener]),
        )
    }

    /// Counts a dial refused because its target matched no node.
    pub fn dial_forbidden(&self) {
        self.forbidden.inc();
    }

    /// Stops rendering every series of `node` (it left the config).
    pub fn remove_node(&self, node: &str) {
        self.registry.remove_series("node", node);
    }
}

/// One node's SSH-session counters.
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    handshakes: Arc<Counter>,
    handshake_failures: [Arc<Counter>; 5],
    host_key_mismatches: Arc<Counter>,
    reconnects: Arc<Counter>,
    stream_compactions: Arc<Counter>,
    /// `sshbridge_konnectivity_limit_hits_total`, in [`KONN_LIMITS`] order.
    konn_limit_hits: [Arc<Counter>; 4],
}

impl NodeMetrics {
    /// Mirrors the limit counters of the node's Konnectivity path.
    pub fn update_konnectivity_limits(&self, stats: &crate::konnectivity::Stats) {
        let hits = [
            stats.overflow_closes,
            stats.credit_violations,
            stats.half_close_idle_closes,
            stats.dials_over_connection_cap,
        ];
        for (c, n) in self.konn_limit_hits.iter().zip(hits) {
            c.set_at_least(n);
        }
    }

    /// Mirrors a tunnel's cumulative stats. `handshakes_total` is derived
    /// as established sessions (lost ones plus the current one) plus failed
    /// handshakes, since the tunnel does not count attempts itself.
    pub fn update_from_tunnel(&self, stats: &TunnelStats) {
        let f = &stats.handshake_failures;
        let failures = [f.auth, f.host_key, f.timeout, f.refused, f.other];
        for (c, n) in self.handshake_failures.iter().zip(failures) {
            c.set_at_least(n);
        }
        self.reconnects.set_at_least(stats.reconnects);
        self.stream_compactions
            .set_at_least(stats.stream_compactions);
        let established = stats.reconnects + u64::from(stats.state == TunnelState::Up);
        self.handshakes
            .set_at_least(established + failures.iter().sum::<u64>());
    }

    /// Counts a host key that did not match known_hosts (the tunnel's stats
    /// lump this with unknown and revoked keys under `host_key`).
    pub fn host_key_mismatch(&self) {
        self.host_key_mismatches.inc();
    }
}

/// One node's path: dials, streams, bytes, probes and health state. The
/// dial and probe methods touch only atomics.
#[derive(Debug, Clone)]
pub struct PathMetrics {
    transport_up: Arc<Gauge>,
    dial_duration: Arc<Histogram>,
    dial_failures: [Arc<Counter>; 4],
    streams_active: Arc<Gauge>,
    bytes_sent: Arc<Counter>,
    bytes_received: Arc<Counter>,
    probe_duration: Arc<Histogram>,
    probes_ok: Arc<Counter>,
    probes_failed: [Arc<Counter>; 5],
    state: [Arc<Gauge>; PathState::ALL.len()],
}

impl PathMetrics {
    /// Records one dial: its duration, and its failure reason if it failed.
    pub fn observe_dial(&self, elapsed: Duration, outcome: Result<(), DialFailure>) {
        self.dial_duration.observe_duration(elapsed);
        if let Err(f) = outcome {
            let i = DialFailure::ALL.iter().position(|a| *a == f).unwrap_or(0);
            self.dial_failures[i].inc();
        }
    }

    /// Dials so far: how many succeeded, and the failures by reason
    /// (reasons with a count of zero left out). Derived from the dial
    /// histogram and failure counters, so reports and metrics agree.
    pub fn dial_counts(&self) -> (u64, Vec<(&'static str, u64)>) {
        let failures: Vec<(&'static str, u64)> = DialFailure::ALL
            .iter()
            .zip(&self.dial_failures)
            .map(|(f, c)| (f.as_str(), c.get()))
            .filter(|(_, n)| *n > 0)
            .collect();
        let failed: u64 = failures.iter().map(|(_, n)| n).sum();
        let total = self.dial_duration.snapshot().count;
        (total.saturating_sub(failed), failures)
    }

    /// Sets `sshbridge_tunnel_up` for this path.
    pub fn set_transport_up(&self, up: bool) {
        self.transport_up.set(if up { 1.0 } else { 0.0 });
    }

    /// Mirrors an SSH tunnel's stats: transport up, open streams, bytes.
    pub fn update_from_tunnel(&self, stats: &TunnelStats) {
        let open = stats.open_streams as u64;
        self.update_flow(
            stats.state == TunnelState::Up,
            open,
            stats.bytes_sent,
            stats.bytes_received,
        );
    }

    /// Sets transport state, open streams and byte totals from any path's
    /// own counters (totals only ever move up).
    pub fn update_flow(
        &self,
        transport_up: bool,
        open_streams: u64,
        bytes_sent: u64,
        bytes_received: u64,
    ) {
        self.set_transport_up(transport_up);
        self.streams_active.set(open_streams as f64);
        self.bytes_sent.set_at_least(bytes_sent);
        self.bytes_received.set_at_least(bytes_received);
    }

    /// Records one health probe.
    pub fn observe_probe(&self, elapsed: Duration, outcome: Result<(), ProbeErrorKind>) {
        self.probe_duration.observe_duration(elapsed);
        match outcome {
            Ok(()) => self.probes_ok.inc(),
            Err(k) => {
                let i = ProbeErrorKind::ALL
                    .iter()
                    .position(|a| *a == k)
                    .unwrap_or(0);
                self.probes_failed[i].inc();
            }
        }
    }

    /// Sets `sshbridge_path_state`: 1 for `state`, 0 for the others.
    pub fn set_state(&self, state: PathState) {
        for (s, g) in PathState::ALL.iter().zip(&self.state) {
            g.set(if *s == state { 1.0 } else { 0.0 });
        }
    }
}
