//! The label sets of the bridge's metric families. Every label value is a
//! closed enum (or a node name), so a series with an unknown value cannot
//! be asked for.

use sshbridge_core::label_value;
use sshbridge_core::metrics::EncodeLabelSet;

use crate::health::{PathState, ProbeErrorKind};
use crate::path::DialError;
use crate::ssh::{HandshakeFailureKind, TunnelState};

/// The `path` label: the node's path a series is about, or empty for a
/// dial that matched no node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathLabel {
    /// The SSH tunnel.
    Ssh,
    /// The Konnectivity agent path.
    Konnectivity,
    /// No path (a forbidden dial).
    None,
}

impl PathLabel {
    /// The paths a node can have.
    pub const NODE_PATHS: [PathLabel; 2] = [PathLabel::Ssh, PathLabel::Konnectivity];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PathLabel::Ssh => "ssh",
            PathLabel::Konnectivity => "konnectivity",
            PathLabel::None => "",
        }
    }

    /// The label of a path named `ssh` or `konnectivity`.
    pub fn from_name(name: &str) -> PathLabel {
        match name {
            "ssh" => PathLabel::Ssh,
            "konnectivity" => PathLabel::Konnectivity,
            _ => PathLabel::None,
        }
    }
}

/// Why a dial failed, as counted in `sshbridge_dial_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Every reason, in label order.
    pub const ALL: [DialFailure; 4] = [
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

/// The `limit` of `sshbridge_konnectivity_limit_hits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KonnLimit {
    /// A reader used up `konnectivity.stall_timeout`.
    StallBudget,
    /// The agent sent past a connection's window.
    CreditViolation,
    /// Compatibility mode: the target stayed silent after the client's EOF.
    HalfCloseIdle,
    /// `konnectivity.max_connections_per_agent`.
    ConnectionCap,
}

impl KonnLimit {
    /// Every limit, in label order.
    pub const ALL: [KonnLimit; 4] = [
        KonnLimit::StallBudget,
        KonnLimit::CreditViolation,
        KonnLimit::HalfCloseIdle,
        KonnLimit::ConnectionCap,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            KonnLimit::StallBudget => "stall_budget",
            KonnLimit::CreditViolation => "credit_violation",
            KonnLimit::HalfCloseIdle => "half_close_idle",
            KonnLimit::ConnectionCap => "connection_cap",
        }
    }
}

/// The `result` of `sshbridge_probes_total`: `ok` or the failure kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    /// The probe passed.
    Ok,
    /// The probe failed this way.
    Failed(ProbeErrorKind),
}

impl ProbeResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeResult::Ok => "ok",
            ProbeResult::Failed(k) => k.as_str(),
        }
    }

    /// Every result, `ok` first.
    pub fn all() -> impl Iterator<Item = ProbeResult> {
        std::iter::once(ProbeResult::Ok).chain(ProbeErrorKind::ALL.map(ProbeResult::Failed))
    }
}

/// The `reason` of `sshbridge_konnectivity_agents_disconnected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentCut {
    /// More than `konnectivity.max_queued_control` control packets unread.
    ControlBacklog,
}

impl AgentCut {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        "control_backlog"
    }
}

/// The `listener` of the TLS handshake counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// The egress (HTTP CONNECT over TLS) listener.
    Egress,
    /// The admin API listener.
    Admin,
    /// The Konnectivity agent server.
    Agent,
}

impl Listener {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Egress => "egress",
            Listener::Admin => "admin",
            Listener::Agent => "agent",
        }
    }
}

/// A tunnel state as a label value (the type is the SSH crate's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tunnel(pub TunnelState);

impl Tunnel {
    /// Every state, in label order.
    pub const ALL: [TunnelState; 6] = [
        TunnelState::Connecting,
        TunnelState::Up,
        TunnelState::Backoff,
        TunnelState::Draining,
        TunnelState::Parked,
        TunnelState::Stopped,
    ];

    fn as_str(self) -> &'static str {
        self.0.as_str()
    }
}

/// A handshake failure kind as a label value (the type is the SSH crate's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handshake(pub HandshakeFailureKind);

impl Handshake {
    /// Every kind, in label order.
    pub const ALL: [HandshakeFailureKind; 5] = [
        HandshakeFailureKind::Auth,
        HandshakeFailureKind::HostKey,
        HandshakeFailureKind::Timeout,
        HandshakeFailureKind::Refused,
        HandshakeFailureKind::Other,
    ];

    fn as_str(self) -> &'static str {
        self.0.as_str()
    }
}

label_value!(
    PathLabel,
    DialFailure,
    KonnLimit,
    ProbeResult,
    AgentCut,
    Listener,
    Tunnel,
    Handshake
);

/// `{version}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct VersionL {
    pub version: String,
}

/// `{state}` of a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TunnelL {
    pub state: Tunnel,
}

/// `{node}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct NodeL {
    pub node: String,
}

/// `{node, reason}` of a handshake failure.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HandshakeL {
    pub node: String,
    pub reason: Handshake,
}

/// `{node, limit}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LimitL {
    pub node: String,
    pub limit: KonnLimit,
}

/// `{reason}` of an agent stream the bridge ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AgentCutL {
    pub reason: AgentCut,
}

/// `{listener}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerL {
    pub listener: Listener,
}

/// `{node, path}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PathL {
    pub node: String,
    pub path: PathLabel,
}

/// `{node, path, reason}` of a failed dial.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DialL {
    pub node: String,
    pub path: PathLabel,
    pub reason: DialFailure,
}

/// `{node, path, result}` of a probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ProbeL {
    pub node: String,
    pub path: PathLabel,
    pub result: ProbeResult,
}

/// `{node, path, state}` of a path's health.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PathStateL {
    pub node: String,
    pub path: PathLabel,
    pub state: PathState,
}
