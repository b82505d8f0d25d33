//! The daemon's side of the migration: the [`Fleet`] the controller drives
//! (nodes, probes, live counters, routes) and the `/migration` admin API.
//!
//! The controller starts with the daemon and resumes from its store, so a
//! node cut over before a crash is served over Konnectivity again at once.
//! A store that cannot be read (corrupt, newer schema) leaves the
//! migration unavailable, reported on `/migration`, while every node is
//! served over its configured route: the bridge keeps carrying egress.

use std::sync::{Arc, Weak};

use sshbridge_config::Route;
use sshbridge_core::PathKind;
use sshbridge_migrate::{
    Controller, ControllerError, FileStore, Fleet, LiveCounters, NodeView, ProbeSample, RouteError,
    Settings, StoreError,
};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::Shared;
use crate::health::PathState;

/// The daemon as the migration controller sees it. Holds the daemon
/// weakly: the daemon owns the controller.
pub(super) struct DaemonFleet {
    shared: Weak<Shared>,
}

impl Fleet for DaemonFleet {
    fn nodes(&self) -> Vec<NodeView> {
        let Some(shared) = self.shared.upgrade() else {
            return Vec::new();
        };
        let snap = shared.snapshot();
        snap.config
            .nodes
            .iter()
            .map(|spec| {
                let node = &snap.nodes[&spec.name];
                let konnectivity_up = node.path_state(PathKind::Konnectivity) == PathState::Up;
                let (connected, healthy) = node.hub.as_ref().map_or((0, 0), |hub| {
                    let agents = hub.agents(&spec.name);
                    let serving = agents.iter().filter(|a| !a.draining).count();
                    let healthy = if konnectivity_up { serving } else { 0 };
                    (agents.len(), healthy)
                });
                NodeView {
                    name: spec.name.clone(),
                    ssh_up: node.path_state(PathKind::Ssh) == PathState::Up,
                    agents_connected: u32::try_from(connected).unwrap_or(u32::MAX),
                    agents_healthy: u32::try_from(healthy).unwrap_or(u32::MAX),
                    route: node.route(),
                }
            })
            .collect()
    }

    async fn probe(&self, node: &str, path: Route) -> ProbeSample {
        let Some(shared) = self.shared.upgrade() else {
            return ProbeSample::failed(Default::default(), "the daemon is stopping");
        };
        let snap = shared.snapshot();
        match snap.nodes.get(node) {
            Some(entry) => entry.probe_now(path, &snap.probes).await,
            None => ProbeSample::failed(
                Default::default(),
                format!("no node named {node} in the current configuration"),
            ),
        }
    }

    fn live(&self, node: &str, path: Route) -> LiveCounters {
        let Some(shared) = self.shared.upgrade() else {
            return LiveCounters::default();
        };
        let snap = shared.snapshot();
        snap.nodes
            .get(node)
            .map(|n| n.live(path))
            .unwrap_or_default()
    }

    fn peers(&self, node: &str) -> Vec<sshbridge_migrate::PeerView> {
        self.shared
            .upgrade()
            .map(|s| s.peers.views(node))
            .unwrap_or_default()
    }

    fn set_route(&self, node: &str, route: Route) -> Result<(), RouteError> {
        let Some(shared) = self.shared.upgrade() else {
            return Err(RouteError {
                node: node.into(),
                route,
                reason: "the daemon is stopping".into(),
            });
        };
        shared
            .set_route(node, route)
            .map(|_| {
                shared
                    .migration_routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(node.to_owned(), route);
            })
            .map_err(|e| RouteError {
                node: node.into(),
                route,
                reason: e.to_string(),
            })
    }
}

/// Why the migration API is unavailable while the daemon runs on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unavailable {
    /// The store's directory could not be created.
    #[error("migration.store = {spec:?}: cannot create {}: {source}", .dir.display())]
    StoreDir {
        /// `migration.store` as configured.
        spec: String,
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(StoreError),
    /// The controller could not start on it (corrupt or newer state).
    #[error("migration unavailable: {0}")]
    Start(ControllerError),
    /// A shared record (`kubernetes:` store) cannot be used.
    #[error("migration unavailable: {0}")]
    Shared(String),
}

/// Opens (and locks) the configured store. A store held by another
/// daemon refuses the start (two daemons would overwrite each other's
/// state); any other problem only leaves the migration unavailable.
pub(super) fn open_store(
    config: &sshbridge_config::Config,
) -> Result<Result<FileStore, Unavailable>, super::StartError> {
    let spec = &config.migration.store;
    if let Some(dir) = spec
        .strip_prefix("file:")
        .map(std::path::Path::new)
        .and_then(|p| p.parent())
    {
        if !dir.as_os_str().is_empty() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return Ok(Err(Unavailable::StoreDir {
                    spec: spec.clone(),
                    dir: dir.into(),
                    source: e,
                }));
            }
        }
    }
    match sshbridge_migrate::open_store(spec) {
        Ok(store) => Ok(Ok(store)),
        Err(e @ StoreError::Locked { .. }) => Err(super::StartError::StoreInUse(e)),
        Err(e) => Ok(Err(Unavailable::Store(e))),
    }
}

/// The fleet the controller drives: this daemon, held weakly.
pub(super) fn fleet(shared: &Arc<Shared>) -> Arc<DaemonFleet> {
    Arc::new(DaemonFleet {
        shared: Arc::downgrade(shared),
    })
}

/// Starts the controller on the opened store, or says why it cannot.
pub(super) fn start(
    shared: &Arc<Shared>,
    store: Result<FileStore, Unavailable>,
    stop: CancellationToken,
) -> Result<Controller, Unavailable> {
    let config = shared.snapshot().config.clone();
    let store = store?;
    let fleet = fleet(shared);
    let state = store
        .read()
        .map_err(|e| Unavailable::Start(e.into()))?
        .unwrap_or_default();
    let settings = Settings::from_config(&config.migration);
    let controller = Controller::start_with(fleet, store, state, settings, stop);
    info!(store = %config.migration.store, "migration controller started");
    Ok(controller)
}

/// Waits for `root` to be cancelled, then stops the migration controller
/// and waits for its task and watchers (the daemon waits for this task).
pub(super) async fn stop_on(shared: Arc<Shared>, root: CancellationToken) {
    let Some(Ok(controller)) = shared.migration.get() else {
        return;
    };
    root.cancelled().await;
    let running = controller.running_tasks();
    controller.shutdown().await;
    info!("migration controller stopped with its watchers ({running} tasks)");
}

/// After a restart, the nodes of a finalized migration need no SSH
/// session: park them again.
pub(super) async fn park_if_finalized(shared: Arc<Shared>) {
    let Some(Ok(controller)) = shared.migration.get() else {
        return;
    };
    let Ok(status) = controller.status().await else {
        return;
    };
    if status.finalized_at.is_some() {
        let done: Vec<String> = status
            .nodes
            .iter()
            .filter(|n| n.phase == sshbridge_migrate::NodePhase::Done)
            .map(|n| n.name.clone())
            .collect();
        shared.park_ssh(&done);
    }
}
