//! The bridge's metric families: names, help texts, label sets and
//! buckets, registered once.

use sshbridge_core::metrics::{Counter, Family, Gauge, Histogram, Registry};

use super::labels::*;

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

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn dial_histogram() -> Histogram {
    Histogram::new(DIAL_BUCKETS.iter().copied())
}

fn probe_histogram() -> Histogram {
    Histogram::new(PROBE_BUCKETS.iter().copied())
}

/// Every family of the bridge. Clones share the series.
#[derive(Debug, Clone)]
pub(super) struct Families {
    pub(super) tunnels: Family<TunnelL, Gauge>,
    pub(super) tunnel_up: Family<PathL, Gauge>,
    pub(super) handshakes: Family<NodeL, Counter>,
    pub(super) handshake_failures: Family<HandshakeL, Counter>,
    pub(super) host_key_mismatches: Family<NodeL, Counter>,
    pub(super) stream_compactions: Family<NodeL, Counter>,
    pub(super) konn_limit_hits: Family<LimitL, Counter>,
    pub(super) agents_cut: Family<AgentCutL, Counter>,
    pub(super) tls_refused: Family<ListenerL, Counter>,
    pub(super) tls_timeouts: Family<ListenerL, Counter>,
    pub(super) reconnects: Family<NodeL, Counter>,
    pub(super) dial_duration: Histograms<PathL>,
    pub(super) dial_failures: Family<DialL, Counter>,
    /// Successful dials, for `/report` and the migration's soak (not
    /// exposed: the histogram's count holds them). Kept by label set so a
    /// reload's new handles continue the count.
    pub(super) dials_ok: Family<PathL, Counter>,
    pub(super) streams_active: Family<PathL, Gauge>,
    pub(super) bytes_sent: Family<PathL, Counter>,
    pub(super) bytes_received: Family<PathL, Counter>,
    pub(super) probe_duration: Histograms<PathL>,
    pub(super) probes: Family<ProbeL, Counter>,
    pub(super) path_state: Family<PathStateL, Gauge>,
}

impl Families {
    pub(super) fn register(r: &Registry) -> Families {
        let f = Families {
            tunnels: Family::default(),
            tunnel_up: Family::default(),
            handshakes: Family::default(),
            handshake_failures: Family::default(),
            host_key_mismatches: Family::default(),
            stream_compactions: Family::default(),
            konn_limit_hits: Family::default(),
            agents_cut: Family::default(),
            tls_refused: Family::default(),
            tls_timeouts: Family::default(),
            reconnects: Family::default(),
            dial_duration: Family::new_with_constructor(dial_histogram),
            dial_failures: Family::default(),
            dials_ok: Family::default(),
            streams_active: Family::default(),
            bytes_sent: Family::default(),
            bytes_received: Family::default(),
            probe_duration: Family::new_with_constructor(probe_histogram),
            probes: Family::default(),
            path_state: Family::default(),
        };
        r.register(
            "sshbridge_tunnels",
            "Number of nodes whose SSH tunnel is in each state.",
            f.tunnels.clone(),
        );
        r.register(
            "sshbridge_tunnel_up",
            "1 while the node's path transport (SSH session, agent stream) is up, else 0.",
            f.tunnel_up.clone(),
        );
        r.register(
            "sshbridge_handshakes",
            "SSH connection attempts to the node (established sessions plus failed handshakes).",
            f.handshakes.clone(),
        );
        r.register(
            "sshbridge_handshake_failures",
            "Failed SSH connection attempts to the node, by reason.",
            f.handshake_failures.clone(),
        );
        r.register(
            "sshbridge_host_key_mismatches",
            "Times the node presented a host key that does not match known_hosts.",
            f.host_key_mismatches.clone(),
        );
        r.register(
            "sshbridge_ssh_stream_compactions",
            "Times an SSH stream's receive queue reached ssh.max_stream_chunks and was compacted.",
            f.stream_compactions.clone(),
        );
        r.register(
            "sshbridge_konnectivity_limit_hits",
            "Konnectivity connections of the node closed or dials refused by a limit: stall_budget \
             (a reader used up konnectivity.stall_timeout), credit_violation (the agent sent past a \
             connection's window), half_close_idle (compatibility mode: the target stayed silent \
             after the client's EOF), connection_cap (konnectivity.max_connections_per_agent).",
            f.konn_limit_hits.clone(),
        );
        r.register(
            "sshbridge_konnectivity_agents_disconnected",
            "Agent streams the bridge ended because a limit was hit: control_backlog (more than \
             konnectivity.max_queued_control control packets unread by the agent).",
            f.agents_cut.clone(),
        );
        r.register(
            "sshbridge_tls_handshakes_refused",
            "Connections closed because the listener already ran max_tls_handshakes handshakes.",
            f.tls_refused.clone(),
        );
        r.register(
            "sshbridge_tls_handshake_timeouts",
            "TLS handshakes not finished within the listener's tls_handshake_timeout.",
            f.tls_timeouts.clone(),
        );
        r.register(
            "sshbridge_reconnects",
            "Established SSH sessions to the node that were lost.",
            f.reconnects.clone(),
        );
        r.register(
            "sshbridge_dial_duration_seconds",
            "Time to open a stream to a target through the node's path, successful or not.",
            f.dial_duration.clone(),
        );
        r.register(
            "sshbridge_dial_failures",
            "Dials that failed, by reason (forbidden dials match no node and carry empty node \
             and path).",
            f.dial_failures.clone(),
        );
        r.register(
            "sshbridge_streams_active",
            "Streams open through the node's path now.",
            f.streams_active.clone(),
        );
        r.register(
            "sshbridge_bytes_sent",
            "Bytes written by clients towards targets behind the node.",
            f.bytes_sent.clone(),
        );
        r.register(
            "sshbridge_bytes_received",
            "Bytes received from targets behind the node.",
            f.bytes_received.clone(),
        );
        r.register(
            "sshbridge_probe_duration_seconds",
            "Duration of kubelet health probes through the node's path.",
            f.probe_duration.clone(),
        );
        r.register(
            "sshbridge_probes",
            "Kubelet health probes through the node's path, by result (ok or the failure kind).",
            f.probes.clone(),
        );
        r.register(
            "sshbridge_path_state",
            "1 for the current health state of the node's path, 0 for the others.",
            f.path_state.clone(),
        );
        f
    }
}
