//! How a node's paths are watched and dialed: liveness watches for the
//! probers, the probers' dialers, and dials bounded and recorded.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::health::ProbeDial;
use crate::konnectivity::Hub;
use crate::metrics::{DialFailure, PathMetrics};
use crate::path::{BoxStream, DialError};
use crate::ssh::{Tunnel, TunnelState};

pub(super) async fn observed(
    metrics: &PathMetrics,
    dial: impl Future<Output = Result<BoxStream, DialError>>,
) -> Result<BoxStream, DialError> {
    let started = Instant::now();
    let result = dial.await;
    metrics.observe_dial(
        started.elapsed(),
        result.as_ref().map(|_| ()).map_err(DialFailure::from),
    );
    result.map(|stream| metrics.meter(stream))
}

/// `dial` bounded by `timeout`; an expired dial is dropped (for an agent,
/// dropping sends DIAL_CLS).
pub(super) async fn dial_within(
    node: &str,
    host: &str,
    port: u16,
    timeout: Duration,
    dial: impl Future<Output = Result<BoxStream, DialError>>,
) -> Result<BoxStream, DialError> {
    match tokio::time::timeout(timeout, dial).await {
        Ok(result) => result,
        Err(_) => Err(DialError::Timeout {
            node: node.to_string(),
            target: crate::router::format_target(host, port),
            after: timeout,
        }),
    }
}

/// `true` while the tunnel's session is up, for the SSH prober.
pub(super) fn ssh_liveness(tunnel: &Tunnel, stop: CancellationToken) -> watch::Receiver<bool> {
    follow(tunnel.subscribe(), |s| *s == TunnelState::Up, stop)
}

/// `true` while at least one non-draining agent serves the node.
pub(super) fn agents_liveness(
    agents: watch::Receiver<usize>,
    stop: CancellationToken,
) -> watch::Receiver<bool> {
    follow(agents, |n| *n > 0, stop)
}

/// A watch of `f(value)` that follows `source` until `stop`.
fn follow<T: Send + Sync + 'static>(
    mut source: watch::Receiver<T>,
    f: impl Fn(&T) -> bool + Send + 'static,
    stop: CancellationToken,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(f(&source.borrow()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = source.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let value = f(&source.borrow_and_update());
                    tx.send_replace(value);
                }
            }
        }
    });
    rx
}

/// The transport a probe dials through: probes dial like any stream, but
/// are not counted as egress dials.
pub(super) enum Via {
    /// The node's SSH tunnel.
    Ssh(Tunnel),
    /// The node's Konnectivity agents.
    Konnectivity(Hub),
}

/// A probe dialer: `node`'s path `via`, bounded by `timeout`.
pub(super) struct ProbeDialer {
    pub(super) node: String,
    pub(super) via: Via,
    pub(super) timeout: Duration,
}

impl ProbeDial for ProbeDialer {
    async fn dial(&self, host: &str, port: u16) -> Result<BoxStream, DialError> {
        let (node, t) = (&self.node, self.timeout);
        match &self.via {
            Via::Ssh(tunnel) => dial_within(node, host, port, t, tunnel.dial(host, port)).await,
            Via::Konnectivity(hub) => {
                dial_within(node, host, port, t, hub.dial(node, host, port)).await
            }
        }
    }
}
