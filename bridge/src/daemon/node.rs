//! One node as the daemon runs it: its SSH tunnel, its Konnectivity path
//! (when the bridge has an agent server), a prober per path, and metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sshbridge_config::{Node, Route};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::health::{PathState, ProbeDial, ProbeHandle, ProbeSettings, Prober};
use crate::konnectivity::Hub;
use crate::metrics::{BridgeMetrics, NodeMetrics, PathMetrics};
use crate::path::{BoxStream, DialError};
use crate::report::{rfc3339, DialStats, NodeReport, PathReport, Paths, ProbeStats};
use crate::ssh::{SshContext, Tunnel, TunnelState};

mod paths;
use paths::{agents_liveness, dial_within, observed, ssh_liveness, ProbeDialer, Via};
use sshbridge_migrate::{LiveCounters, ProbeSample};

/// One path of a node as observed: its prober and its metrics.
#[derive(Clone)]
pub(super) struct PathWatch {
    pub(super) prober: ProbeHandle,
    pub(super) metrics: PathMetrics,
}

/// A node's paths, probers and metrics. Cloning shares them.
#[derive(Clone)]
pub(super) struct NodeEntry {
    pub(super) spec: Node,
    pub(super) tunnel: Tunnel,
    pub(super) ssh: PathWatch,
    /// The Konnectivity path: the bridge's agent hub and this node's watch
    /// of it; `None` without a `[konnectivity]` section.
    pub(super) konnectivity: Option<(Hub, PathWatch)>,
    pub(super) metrics: NodeMetrics,
    /// Cancelled when the node leaves the config: stops its probers and
    /// liveness watches. The tunnel has its own token and drains first.
    pub(super) watchers: CancellationToken,
    /// The path that serves the node's new streams. Starts as the config's
    /// `route`; the migration changes it at run time. Shared by the
    /// clones of this entry, so it survives reloads that keep the node.
    pub(super) route: Arc<watch::Sender<Route>>,
}

/// What a node needs from the daemon to start.
pub(super) struct Spawn<'a> {
    pub(super) ctx: &'a Arc<SshContext>,
    pub(super) root: &'a CancellationToken,
    pub(super) probes: &'a ProbeSettings,
    pub(super) metrics: &'a BridgeMetrics,
    pub(super) hub: Option<&'a Hub>,
    pub(super) dial_timeout: Duration,
    /// Offset of this node's first probe, so nodes do not probe in a burst.
    pub(super) phase: Duration,
}

impl NodeEntry {
    /// Starts a node's tunnel and probers.
    pub(super) fn spawn(spec: &Node, s: Spawn<'_>) -> NodeEntry {
        let events = Arc::new(s.metrics.node(&spec.name));
        let tunnel =
            Tunnel::spawn_with_events(spec.clone(), s.ctx.clone(), s.root.child_token(), events);
        Self::around(spec, tunnel, s)
    }

    /// A node entry around an existing tunnel (a reload that changed only
    /// probe settings keeps the session).
    pub(super) fn around(spec: &Node, tunnel: Tunnel, s: Spawn<'_>) -> NodeEntry {
        let watchers = s.root.child_token();
        let ssh_dial = ProbeDialer {
            node: spec.name.clone(),
            via: Via::Ssh(tunnel.clone()),
            timeout: s.dial_timeout,
        };
        let ssh = watch_path(
            spec,
            "ssh",
            ssh_dial,
            ssh_liveness(&tunnel, watchers.clone()),
            &s,
            &watchers,
        );
        let konnectivity = s.hub.map(|hub| {
            let dial = ProbeDialer {
                node: spec.name.clone(),
                via: Via::Konnectivity(hub.clone()),
                timeout: s.dial_timeout,
            };
            let liveness = agents_liveness(hub.subscribe(&spec.name), watchers.clone());
            (
                hub.clone(),
                watch_path(spec, "konnectivity", dial, liveness, &s, &watchers),
            )
        });
        NodeEntry {
            spec: spec.clone(),
            tunnel,
            ssh,
            konnectivity,
            metrics: s.metrics.node(&spec.name),
            watchers,
            route: Arc::new(watch::channel(spec.route).0),
        }
    }

    /// Keeps `prev`'s run-time route (a new prober around the same node).
    pub(super) fn with_route_of(mut self, prev: &NodeEntry) -> NodeEntry {
        self.route = prev.route.clone();
        self
    }

    /// The path serving new streams now.
    pub(super) fn route(&self) -> Route {
        *self.route.borrow()
    }

    /// The observed state of a path (`Unknown` for a path the bridge has not).
    pub(super) fn path_state(&self, path: Route) -> PathState {
        match path {
            Route::Ssh if self.ssh_parked() => PathState::Parked,
            Route::Ssh => self.ssh.prober.state(),
            Route::Konnectivity => self
                .konnectivity
                .as_ref()
                .map_or(PathState::Unknown, |(_, w)| w.prober.state()),
        }
    }

    /// Whether the SSH session was parked (the node's migration was
    /// finalized); its prober then only sees a closed transport.
    pub(super) fn ssh_parked(&self) -> bool {
        self.tunnel.state() == TunnelState::Parked
    }

    /// Whether the node's active path may take streams for service
    /// addresses: transport up and probes not failing.
    pub(super) fn healthy(&self) -> bool {
        let transport_up = match self.route() {
            Route::Ssh => self.tunnel.state() == TunnelState::Up,
            Route::Konnectivity => self
                .konnectivity
                .as_ref()
                .is_some_and(|(hub, _)| *hub.subscribe(&self.spec.name).borrow() > 0),
        };
        transport_up && self.path_state(self.route()) != PathState::Down
    }

    /// Dials through the node's active path within `timeout`, recording
    /// the dial in that path's metrics.
    pub(super) async fn dial(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<BoxStream, DialError> {
        let name = &self.spec.name;
        match (self.route(), &self.konnectivity) {
            (Route::Ssh, _) => {
                observed(
                    &self.ssh.metrics,
                    dial_within(name, host, port, timeout, self.tunnel.dial(host, port)),
                )
                .await
            }
            (Route::Konnectivity, Some((hub, watch))) => {
                observed(
                    &watch.metrics,
                    dial_within(name, host, port, timeout, hub.dial(name, host, port)),
                )
                .await
            }
            (Route::Konnectivity, None) => Err(DialError::Unavailable {
                node: name.clone(),
                path: "konnectivity",
                reason: "the node is routed to konnectivity, but the bridge has no [konnectivity] \
                         agent server; add the section and restart, or route the node to ssh"
                    .into(),
            }),
        }
    }

    /// One probe of `path` now (the migration's shadow and soak checks).
    pub(super) async fn probe_now(&self, path: Route, settings: &ProbeSettings) -> ProbeSample {
        let started = Instant::now();
        let name = self.spec.name.clone();
        let outcome = match (path, &self.konnectivity) {
            (Route::Ssh, _) => {
                let dial = ProbeDialer {
                    node: name.clone(),
                    via: Via::Ssh(self.tunnel.clone()),
                    timeout: settings.timeout,
                };
                crate::health::probe_now(&name, "ssh", self.spec.address, &dial, settings).await
            }
            (Route::Konnectivity, Some((hub, _))) => {
                let dial = ProbeDialer {
                    node: name.clone(),
                    via: Via::Konnectivity(hub.clone()),
                    timeout: settings.timeout,
                };
                crate::health::probe_now(&name, "konnectivity", self.spec.address, &dial, settings)
                    .await
            }
            (Route::Konnectivity, None) => {
                return ProbeSample::failed(
                    started.elapsed(),
                    "the bridge has no [konnectivity] agent server",
                )
            }
        };
        match outcome {
            Ok(latency) => ProbeSample::ok(latency),
            Err(failure) => ProbeSample::failed(started.elapsed(), failure.to_string()),
        }
    }

    /// Live counters of a path for the migration's soak watch.
    pub(super) fn live(&self, path: Route) -> LiveCounters {
        let watch = match path {
            Route::Ssh => Some(&self.ssh),
            Route::Konnectivity => self.konnectivity.as_ref().map(|(_, w)| w),
        };
        let Some(watch) = watch else {
            return LiveCounters::default();
        };
        let (dials_ok, failed) = watch.metrics.dial_counts();
        let health = watch.prober.snapshot();
        LiveCounters {
            dials_ok,
            dials_failed: failed.iter().map(|(_, n)| n).sum(),
            probes_ok: health.probes_ok,
            probes_failed: health.probes_failed,
            last_error: health.last_error,
        }
    }

    /// Brings the node's metrics up to date with its paths' counters.
    pub(super) fn refresh_metrics(&self) {
        self.ssh
            .metrics
            .set_transport_up(self.tunnel.state() == TunnelState::Up);
        if self.ssh_parked() {
            self.ssh.metrics.set_state(PathState::Parked);
        }
        if let Some((hub, watch)) = &self.konnectivity {
            let s = hub.stats(&self.spec.name);
            self.metrics.update_konnectivity_limits(&s);
            let up = *hub.subscribe(&self.spec.name).borrow() > 0;
            watch.metrics.set_transport_up(up);
        }
    }

    /// The node's part of `/report`.
    pub(super) fn report(&self) -> NodeReport {
        let stats = self.tunnel.stats();
        let mut ssh = path_report(&self.ssh);
        // While the session is down, the tunnel's own error (refused, host
        // key, timeout...) says more than "transport not up".
        ssh.last_error = if stats.state == TunnelState::Up {
            ssh.last_error.or(stats.last_error)
        } else {
            stats.last_error.or(ssh.last_error)
        };
        if self.ssh_parked() {
            ssh.state = PathState::Parked;
            ssh.last_error = None;
        }
        ssh.reconnects = stats.reconnects;
        ssh.open_streams = stats.open_streams as u64;
        ssh.bytes_sent = stats.bytes_sent;
        ssh.bytes_received = stats.bytes_received;
        let konnectivity = self.konnectivity.as_ref().map(|(hub, watch)| {
            let s = hub.stats(&self.spec.name);
            PathReport {
                open_streams: s.open_streams,
                bytes_sent: s.bytes_to_node,
                bytes_received: s.bytes_from_node,
                flow_control: hub.flow_control(&self.spec.name).map(str::to_string),
                ..path_report(watch)
            }
        });
        NodeReport {
            name: self.spec.name.clone(),
            address: self.spec.address.to_string(),
            route: self.route(),
            paths: Paths { ssh, konnectivity },
        }
    }
}

/// Probe-derived part of a path's report; the caller adds flow counters.
fn path_report(watch: &PathWatch) -> PathReport {
    let health = watch.prober.snapshot();
    let (ok, failed) = watch.metrics.dial_counts();
    let window = health.window_size;
    PathReport {
        state: health.state,
        since: Some(rfc3339(health.since)),
        last_error: health.last_error,
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
        dials: DialStats {
            ok,
            failed: failed
                .into_iter()
                .map(|(reason, n)| (reason.to_string(), n))
                .collect(),
        },
        ..PathReport::default()
    }
}

fn watch_path(
    spec: &Node,
    path: &'static str,
    dialer: impl ProbeDial,
    liveness: watch::Receiver<bool>,
    s: &Spawn<'_>,
    watchers: &CancellationToken,
) -> PathWatch {
    let metrics = s.metrics.path(&spec.name, path);
    let settings = s.probes.clone().with_events(Arc::new(metrics.clone()));
    let prober = Prober::spawn(
        spec.name.clone(),
        spec.address,
        path,
        dialer,
        liveness,
        settings,
        s.phase,
        watchers.clone(),
    );
    PathWatch { prober, metrics }
}
