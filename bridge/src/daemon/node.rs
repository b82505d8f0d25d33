//! One node as the daemon runs it: its paths keyed by [`PathKind`] (the SSH
//! tunnel; the Konnectivity agents when the bridge has an agent server), a
//! prober per path, and metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sshbridge_config::{Node, Route};
use sshbridge_core::PathKind;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::health::{PathDial, PathState, ProbeHandle, ProbeSettings, Prober};
use crate::konnectivity::{Hub, NodePath};
use crate::metrics::{BridgeMetrics, PathMetrics};
use crate::path::{dial_within, BoxStream, DialError, SharedPath};
use crate::ssh::{SshContext, Tunnel};
use crate::tasks::Tasks;

mod paths;
mod report;
use paths::observed;
use sshbridge_migrate::ProbeSample;

/// One path of a node as the daemon runs it: the path, its prober and its
/// metrics.
#[derive(Clone)]
pub(super) struct PathEntry {
    pub(super) path: SharedPath,
    pub(super) prober: ProbeHandle,
    pub(super) metrics: PathMetrics,
}

impl PathEntry {
    /// The observed state: `Parked` for a path closed on purpose (its
    /// prober then only sees a closed transport), else the prober's.
    pub(super) fn state(&self) -> PathState {
        if self.path.parked() {
            PathState::Parked
        } else {
            self.prober.state()
        }
    }
}

/// A node's paths, probers and metrics. Cloning shares them.
#[derive(Clone)]
pub(super) struct NodeEntry {
    pub(super) spec: Node,
    /// The SSH path's own controls (park, drain, new context); also
    /// `paths[Ssh]`.
    pub(super) tunnel: Tunnel,
    /// The bridge's agent hub (its agents and flow control in reports);
    /// its view of this node is `paths[Konnectivity]`.
    pub(super) hub: Option<Hub>,
    /// Every path the node has, keyed by kind.
    pub(super) paths: BTreeMap<PathKind, PathEntry>,
    /// Cancelled when the node leaves the config: stops its probers. The
    /// tunnel has its own token and drains first.
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
    /// Where the node's probers run.
    pub(super) tasks: &'a Tasks,
    /// Where the node's sessions run: each takes the next shard in turn.
    pub(super) shards: &'a super::shards::Shards,
    pub(super) dial_timeout: Duration,
    /// Offset of this node's first probe, so nodes do not probe in a burst.
    pub(super) phase: Duration,
}

impl NodeEntry {
    /// Starts a node's tunnel and probers.
    pub(super) fn spawn(spec: &Node, s: Spawn<'_>) -> NodeEntry {
        let events = Arc::new(s.metrics.node(&spec.name));
        let tunnel = Tunnel::spawn_with_events(
            spec.clone(),
            s.ctx.clone(),
            s.root.child_token(),
            || s.shards.next(s.tasks),
            events,
        );
        Self::around(spec, tunnel, s)
    }

    /// A node entry around an existing tunnel (a reload that changed only
    /// probe settings keeps the session).
    pub(super) fn around(spec: &Node, tunnel: Tunnel, s: Spawn<'_>) -> NodeEntry {
        let watchers = s.root.child_token();
        let mut paths: Vec<SharedPath> = vec![Arc::new(tunnel.clone())];
        if let Some(hub) = s.hub {
            hub.set_node_events(&spec.name, Arc::new(s.metrics.node(&spec.name)));
            paths.push(Arc::new(NodePath::new(hub.clone(), spec.name.clone())));
        }
        let paths = paths
            .into_iter()
            .map(|path| (path.kind(), watch_path(spec, path, &s, &watchers)))
            .collect();
        NodeEntry {
            spec: spec.clone(),
            tunnel,
            hub: s.hub.cloned(),
            paths,
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
    pub(super) fn path_state(&self, kind: PathKind) -> PathState {
        self.paths
            .get(&kind)
            .map_or(PathState::Unknown, PathEntry::state)
    }

    /// Whether the SSH session was parked (the node's migration was
    /// finalized); its prober then only sees a closed transport.
    pub(super) fn ssh_parked(&self) -> bool {
        self.path_state(PathKind::Ssh) == PathState::Parked
    }

    /// Whether the node's active path may take streams for service
    /// addresses: transport up and probes not failing.
    pub(super) fn healthy(&self) -> bool {
        self.paths
            .get(&self.route())
            .is_some_and(|p| p.path.is_up() && p.state() != PathState::Down)
    }

    /// The runtime a new stream of this node runs on: the SSH tunnel's
    /// shard while the node is routed to ssh, else none of its own.
    pub(super) fn home(&self) -> Option<tokio::runtime::Handle> {
        match self.route() {
            Route::Ssh => self.tunnel.home().cloned(),
            Route::Konnectivity => None,
        }
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
        let kind = self.route();
        let Some(p) = self.paths.get(&kind) else {
            return Err(DialError::Unavailable {
                node: name.clone(),
                path: kind,
                reason: format!(
                    "the node is routed to {kind}, but the bridge has no [{kind}] agent \
                     server; add the section and restart, or route the node to ssh"
                ),
            });
        };
        observed(&p.metrics, dial_within(&*p.path, name, host, port, timeout)).await
    }

    /// One probe of `kind` now (the migration's shadow and soak checks).
    pub(super) async fn probe_now(&self, kind: PathKind, settings: &ProbeSettings) -> ProbeSample {
        let started = Instant::now();
        let name = self.spec.name.clone();
        let Some(p) = self.paths.get(&kind) else {
            return ProbeSample::failed(
                started.elapsed(),
                format!("the bridge has no [{kind}] agent server"),
            );
        };
        let dial = PathDial {
            node: name.clone(),
            path: p.path.clone(),
            timeout: settings.timeout,
        };
        match crate::health::probe_now(&name, kind, self.spec.address, &dial, settings).await {
            Ok(latency) => ProbeSample::ok(latency),
            Err(failure) => ProbeSample::failed(started.elapsed(), failure.to_string()),
        }
    }
}

/// A path's prober and metrics, started under `watchers`.
fn watch_path(
    spec: &Node,
    path: SharedPath,
    s: &Spawn<'_>,
    watchers: &CancellationToken,
) -> PathEntry {
    let kind = path.kind();
    let metrics = s.metrics.path(&spec.name, kind.as_str());
    let settings = s.probes.clone().with_events(Arc::new(metrics.clone()));
    let dialer = PathDial {
        node: spec.name.clone(),
        path: path.clone(),
        timeout: s.dial_timeout,
    };
    let prober = Prober::spawn(
        spec.name.clone(),
        spec.address,
        kind,
        dialer,
        path.liveness(),
        settings,
        s.phase,
        watchers.clone(),
        s.tasks,
    );
    PathEntry {
        path,
        prober,
        metrics,
    }
}
