//! One node as the daemon runs it: its SSH tunnel, the prober of its SSH
//! path, and its metrics handles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sshbridge_config::Node;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::health::{PathState, ProbeDial, ProbeHandle, ProbeSettings, Prober};
use crate::metrics::{BridgeMetrics, DialFailure, NodeMetrics, PathMetrics};
use crate::path::{BoxStream, DialError};
use crate::report::{rfc3339, DialStats, NodeReport, PathReport, Paths, ProbeStats};
use crate::ssh::{SshContext, Tunnel, TunnelState};

/// A node's SSH tunnel, its prober and its metrics. Cloning shares them.
#[derive(Clone)]
pub(super) struct NodeEntry {
    pub(super) spec: Node,
    pub(super) tunnel: Tunnel,
    pub(super) prober: ProbeHandle,
    pub(super) metrics: NodeMetrics,
    pub(super) ssh_metrics: PathMetrics,
    /// Cancelled when the node leaves the config: stops its prober and
    /// liveness watch. The tunnel has its own token and drains first.
    pub(super) watchers: CancellationToken,
}

/// What a node needs from the daemon to start.
pub(super) struct Spawn<'a> {
    pub(super) ctx: &'a Arc<SshContext>,
    pub(super) root: &'a CancellationToken,
    pub(super) probes: &'a ProbeSettings,
    pub(super) metrics: &'a BridgeMetrics,
    pub(super) dial_timeout: Duration,
    /// Offset of this node's first probe, so nodes do not probe in a burst.
    pub(super) phase: Duration,
}

impl NodeEntry {
    /// Starts a node's tunnel and prober.
    pub(super) fn spawn(spec: &Node, s: Spawn<'_>) -> NodeEntry {
        let tunnel = Tunnel::spawn(spec.clone(), s.ctx.clone(), s.root.child_token());
        Self::around(spec, tunnel, s)
    }

    /// A node entry around an existing tunnel (a reload that changed only
    /// probe settings keeps the session).
    pub(super) fn around(spec: &Node, tunnel: Tunnel, s: Spawn<'_>) -> NodeEntry {
        let watchers = s.root.child_token();
        let ssh_metrics = s.metrics.path(&spec.name, "ssh");
        let liveness = liveness(&tunnel, watchers.clone());
        let dialer = SshProbeDial {
            node: spec.name.clone(),
            tunnel: tunnel.clone(),
            timeout: s.dial_timeout,
        };
        let prober = Prober::spawn(
            spec.name.clone(),
            spec.address,
            "ssh",
            dialer,
            liveness,
            s.probes.clone().with_metrics(ssh_metrics.clone()),
            s.phase,
            watchers.clone(),
        );
        NodeEntry {
            spec: spec.clone(),
            tunnel,
            prober,
            metrics: s.metrics.node(&spec.name),
            ssh_metrics,
            watchers,
        }
    }

    /// Whether the node's active path may take streams for service
    /// addresses: session up and probes not failing.
    pub(super) fn healthy(&self) -> bool {
        self.tunnel.state() == TunnelState::Up && self.prober.state() != PathState::Down
    }

    /// Dials through the SSH tunnel within `timeout`, recording the dial.
    pub(super) async fn dial(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<BoxStream, DialError> {
        let started = Instant::now();
        let result = dial_within(&self.tunnel, &self.spec.name, host, port, timeout).await;
        let outcome = result.as_ref().map(|_| ()).map_err(DialFailure::from);
        self.ssh_metrics.observe_dial(started.elapsed(), outcome);
        result
    }

    /// Brings the node's metrics up to date with its tunnel's counters.
    pub(super) fn refresh_metrics(&self) {
        let stats = self.tunnel.stats();
        self.metrics.update_from_tunnel(&stats);
        self.ssh_metrics.update_from_tunnel(&stats);
        self.ssh_metrics
            .set_transport_up(stats.state == TunnelState::Up);
    }

    /// The node's part of `/report`.
    pub(super) fn report(&self) -> NodeReport {
        let stats = self.tunnel.stats();
        let health = self.prober.snapshot();
        let (ok, failed) = self.ssh_metrics.dial_counts();
        let window = health.window_size;
        let ssh = PathReport {
            state: health.state,
            since: Some(rfc3339(health.since)),
            last_error: health.last_error.or(stats.last_error),
            probe: ProbeStats {
                p50_ms: health.latency_p50_ms,
                p99_ms: health.latency_p99_ms,
                window,
                failures_in_window: health.window_failures,
                failure_ratio: if window == 0 {
                    0.0
                } else {
                    f64::from(health.window_failures) / f64::from(window)
                },
            },
            consecutive_failures: health.consecutive_failures,
            reconnects: stats.reconnects,
            open_streams: stats.open_streams as u64,
            bytes_sent: stats.bytes_sent,
            bytes_received: stats.bytes_received,
            dials: DialStats {
                ok,
                failed: failed
                    .into_iter()
                    .map(|(reason, n)| (reason.to_string(), n))
                    .collect(),
            },
        };
        NodeReport {
            name: self.spec.name.clone(),
            address: self.spec.address.to_string(),
            route: self.spec.route,
            paths: Paths {
                ssh,
                konnectivity: None,
            },
        }
    }
}

async fn dial_within(
    tunnel: &Tunnel,
    node: &str,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<BoxStream, DialError> {
    match tokio::time::timeout(timeout, tunnel.dial(host, port)).await {
        Ok(result) => result,
        Err(_) => Err(DialError::Timeout {
            node: node.to_string(),
            target: crate::router::format_target(host, port),
            after: timeout,
        }),
    }
}

/// `true` while the tunnel's session is up, for the prober.
fn liveness(tunnel: &Tunnel, stop: CancellationToken) -> watch::Receiver<bool> {
    let mut states = tunnel.subscribe();
    let (tx, rx) = watch::channel(*states.borrow() == TunnelState::Up);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = states.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let up = *states.borrow_and_update() == TunnelState::Up;
                    tx.send_replace(up);
                }
            }
        }
    });
    rx
}

/// Probes dial through the tunnel like any stream, but are not counted as
/// egress dials.
struct SshProbeDial {
    node: String,
    tunnel: Tunnel,
    timeout: Duration,
}

impl ProbeDial for SshProbeDial {
    async fn dial(&self, host: &str, port: u16) -> Result<BoxStream, DialError> {
        dial_within(&self.tunnel, &self.node, host, port, self.timeout).await
    }
}
