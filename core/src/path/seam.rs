//! The one seam between a node and the ways to reach it: a [`Path`] (the
//! SSH tunnel, the Konnectivity agents) dials, says whether its transport
//! is up ([`Liveness`]), counts its traffic ([`PathStats`]) and names its
//! [`PathKind`]. The daemon holds a node's paths in a map keyed by kind and
//! never matches on which one it holds.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{BoxStream, DialError};
use crate::{HostPort, PathKind};

/// What [`Path::dial`] returns.
pub type DialFuture<'a> = Pin<Box<dyn Future<Output = Result<BoxStream, DialError>> + Send + 'a>>;

/// One way of reaching the targets behind one node.
pub trait Path: Send + Sync + 'static {
    /// Which path this is.
    fn kind(&self) -> PathKind;

    /// Opens a stream to `host:port` as seen from the node. Unbounded in
    /// time; see [`dial_within`].
    fn dial<'a>(&'a self, host: &'a str, port: u16) -> DialFuture<'a>;

    /// Whether the transport is up now (an SSH session, at least one agent).
    fn is_up(&self) -> bool;

    /// Follows [`Path::is_up`] as it changes (for the prober).
    fn liveness(&self) -> Liveness;

    /// Counters and the last transport error, for reports.
    fn stats(&self) -> PathStats;

    /// Whether the path was closed on purpose (a parked SSH session).
    fn parked(&self) -> bool {
        false
    }
}

/// A shared [`Path`].
pub type SharedPath = Arc<dyn Path>;

/// `path.dial(host, port)` bounded by `timeout`; an expired dial is
/// dropped (for an agent, dropping sends DIAL_CLS).
pub async fn dial_within(
    path: &dyn Path,
    node: &str,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<BoxStream, DialError> {
    match tokio::time::timeout(timeout, path.dial(host, port)).await {
        Ok(result) => result,
        Err(_) => Err(DialError::Timeout {
            node: node.to_string(),
            target: HostPort::new(host, port).to_string(),
            after: timeout,
        }),
    }
}

/// A path's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Streams open now.
    pub open_streams: u64,
    /// Bytes written by clients towards targets.
    pub bytes_sent: u64,
    /// Bytes received from targets.
    pub bytes_received: u64,
    /// Established transports that were lost.
    pub reconnects: u64,
    /// The transport's most recent failure (kept after recovery).
    pub last_error: Option<String>,
    /// How the path bounds a slow reader (Konnectivity's flow control).
    pub flow_control: Option<String>,
    /// Konnectivity: the node's agents connected to this bridge (distinct
    /// agent IDs); `None` for SSH.
    pub agents: Option<u64>,
}

/// Follows whether a path's transport is up, without a task of its own:
/// a watch of the transport's state and the test for "up".
pub struct Liveness {
    source: Box<dyn Source>,
}

trait Source: Send + Sync + 'static {
    fn is_up(&self) -> bool;
    fn changed(&mut self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

struct Follow<T, F> {
    rx: watch::Receiver<T>,
    up: F,
}

impl<T, F> Source for Follow<T, F>
where
    T: Send + Sync + 'static,
    F: Fn(&T) -> bool + Send + Sync + 'static,
{
    fn is_up(&self) -> bool {
        (self.up)(&self.rx.borrow())
    }

    fn changed(&mut self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let open = self.rx.changed().await.is_ok();
            self.rx.borrow_and_update();
            open
        })
    }
}

impl Liveness {
    /// Up while `up(state)` holds, as `state` changes.
    pub fn follow<T, F>(state: watch::Receiver<T>, up: F) -> Liveness
    where
        T: Send + Sync + 'static,
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        Liveness {
            source: Box::new(Follow { rx: state, up }),
        }
    }

    /// Whether the transport is up now.
    pub fn is_up(&self) -> bool {
        self.source.is_up()
    }

    /// Waits for the next change; `false` once the source is gone (then it
    /// never changes again).
    pub async fn changed(&mut self) -> bool {
        self.source.changed().await
    }
}

impl From<watch::Receiver<bool>> for Liveness {
    fn from(rx: watch::Receiver<bool>) -> Liveness {
        Liveness::follow(rx, |up| *up)
    }
}
