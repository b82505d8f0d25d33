//! What every path (SSH tunnel, later Konnectivity agent) offers the
//! frontends: dial a target on a node, get a byte stream or a classified
//! error that maps onto an egress status.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

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
        /// `ssh` or `konnectivity`.
        path: &'static str,
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
