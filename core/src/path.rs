//! What every path (SSH tunnel, Konnectivity agent) offers the frontends:
//! dial a target on a node, get a byte stream or a classified error that
//! maps onto an egress status; the [`Path`] seam every path implements;
//! and the health state of a path.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::PathKind;

mod seam;
pub use seam::{dial_within, DialFuture, Liveness, Path, PathStats, SharedPath};

/// A dialed byte stream to a target behind a node. Shutting down its write
/// half sends EOF to the target; dropping it closes the stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

/// Why a dial through a node failed. Each kind maps to one egress status.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The node's path is not up (no session, reconnecting, refused host
    /// key...). HTTP 503.
    #[error("node {node}: path {path} is unavailable: {reason}")]
    Unavailable {
        /// Node name.
        node: String,
        /// The path that is down.
        path: PathKind,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The node (its sshd or agent) refused or failed to reach the target.
    /// HTTP 502.
    #[error("node {node} could not reach {target}: {reason}")]
    Refused {
        /// Node name.
        node: String,
        /// `host:port` that was dialed from the node.
        target: String,
        /// The peer's reason.
        reason: String,
    },
    /// No answer within the dial timeout. HTTP 504.
    #[error("dial of {target} through node {node} timed out after {after:?}")]
    Timeout {
        /// Node name.
        node: String,
        /// `host:port` that was dialed from the node.
        target: String,
        /// The timeout that expired.
        after: Duration,
    },
}

impl DialError {
    /// The HTTP status an egress frontend answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            DialError::Unavailable { .. } => 503,
            DialError::Refused { .. } => 502,
            DialError::Timeout { .. } => 504,
        }
    }

    /// A short, bounded label for metrics (`unavailable`, `refused`, `timeout`).
    pub fn kind(&self) -> &'static str {
        match self {
            DialError::Unavailable { .. } => "unavailable",
            DialError::Refused { .. } => "refused",
            DialError::Timeout { .. } => "timeout",
        }
    }
}

/// Health state of one path of one node.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PathState {
    /// Not probed yet (or the path does not exist yet).
    #[default]
    Unknown,
    /// `up_after` consecutive probes succeeded.
    Up,
    /// Was up; recent probes failed, fewer than `down_after` in a row.
    Degraded,
    /// `down_after` consecutive failures, or the transport is down.
    Down,
    /// Closed on purpose, not a failure: the SSH session of a node whose
    /// migration was finalized. Set by the daemon, never by a prober.
    Parked,
}

impl PathState {
    /// Every state, in label order.
    pub const ALL: [PathState; 5] = [
        PathState::Unknown,
        PathState::Up,
        PathState::Degraded,
        PathState::Down,
        PathState::Parked,
    ];

    /// Position in up = parked < degraded < unknown < down, for `report
    /// diff` (parking a path on purpose is not a regression).
    pub fn severity(self) -> u8 {
        match self {
            PathState::Up | PathState::Parked => 0,
            PathState::Degraded => 1,
            PathState::Unknown => 2,
            PathState::Down => 3,
        }
    }

    /// Lower-case name for reports and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            PathState::Unknown => "unknown",
            PathState::Up => "up",
            PathState::Degraded => "degraded",
            PathState::Down => "down",
            PathState::Parked => "parked",
        }
    }
}

impl std::fmt::Display for PathState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
