//! The daemon's side of the migration: the [`Fleet`] the controller drives
//! (nodes, probes, live counters, routes) and the `/migration` admin API.
//!
//! The controller starts with the daemon and resumes from its store, so a
//! node cut over before a crash is served over Konnectivity again at once.
//! A store that cannot be read (corrupt, newer schema) leaves the
//! migration unavailable, reported on `/migration`, while every node is
//! served over its configured route: the bridge keeps carrying egress.

use std::sync::{Arc, Weak};

use serde::Deserialize;
use sshbridge_config::Route;
use sshbridge_core::PathKind;
use sshbridge_migrate::{
    ApplyOptions, Controller, ControllerError, FileStore, Fleet, LiveCounters, NodeView,
    ProbeSample, RollbackTarget, RouteError, Settings, StoreError,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

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

/// Opens (and locks) the configured store. A store held by another
/// daemon refuses the start (two daemons would overwrite each other's
/// state); any other problem only leaves the migration unavailable.
pub(super) fn open_store(
    config: &sshbridge_config::Config,
) -> Result<Result<FileStore, String>, super::StartError> {
    let spec = &config.migration.store;
    if let Some(dir) = spec
        .strip_prefix("file:")
        .map(std::path::Path::new)
        .and_then(|p| p.parent())
    {
        if !dir.as_os_str().is_empty() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return Ok(Err(format!(
                    "migration.store = {spec:?}: cannot create {}: {e}",
                    dir.display()
                )));
            }
        }
    }
    match sshbridge_migrate::open_store(spec) {
        Ok(store) => Ok(Ok(store)),
        Err(e @ StoreError::Locked { .. }) => Err(super::StartError::StoreInUse(e)),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Starts the controller on the opened store, or says why it cannot.
pub(super) fn start(
    shared: &Arc<Shared>,
    store: Result<FileStore, String>,
    stop: CancellationToken,
) -> Result<Controller, String> {
    let config = shared.snapshot().config.clone();
    let store = store?;
    let fleet = Arc::new(DaemonFleet {
        shared: Arc::downgrade(shared),
    });
    let controller =
        Controller::start(fleet, store, Settings::from_config(&config.migration), stop)
            .map_err(|e| format!("migration unavailable: {e}"))?;
    info!(store = %config.migration.store, "migration controller started");
    Ok(controller)
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

/// Body of `POST /migration/rollback`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    all: bool,
}

/// Serves `/migration` and `/migration/ACTION`.
pub(super) async fn handle(
    shared: &Shared,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let controller = match shared.migration.get() {
        Some(Ok(c)) => c,
        Some(Err(why)) => return error_body(503, why),
        None => return error_body(503, "the migration controller is starting"),
    };
    let action = path
        .strip_prefix("/migration")
        .unwrap_or_default()
        .trim_start_matches('/');
    let result = match (method, action) {
        ("GET", "") => controller.status().await.map(|s| json(&s)),
        ("POST", "plan") => match options(body) {
            Ok(o) => controller.plan(o).await.map(|p| json(&p)),
            Err(e) => return e,
        },
        ("POST", "apply") => match options(body) {
            Ok(o) => controller.apply(o).await.map(|p| json(&p)),
            Err(e) => return e,
        },
        ("POST", "pause") => match controller.pause().await {
            Ok(()) => controller.status().await.map(|s| json(&s)),
            Err(e) => Err(e),
        },
        ("POST", "resume") => match controller.resume().await {
            Ok(()) => controller.status().await.map(|s| json(&s)),
            Err(e) => Err(e),
        },
        ("POST", "rollback") => {
            let target = match serde_json::from_slice::<RollbackBody>(body) {
                Ok(b) if b.all => RollbackTarget::All,
                Ok(b) if !b.nodes.is_empty() => RollbackTarget::Nodes(b.nodes),
                Ok(_) => {
                    return error_body(400, "name the nodes to roll back, or send {\"all\": true}")
                }
                Err(e) => return error_body(400, &format!("bad rollback body: {e}")),
            };
            controller
                .rollback(target)
                .await
                .map(|nodes| serde_json::json!({ "rolled_back": nodes }).to_string())
        }
        ("POST", "finalize") => controller.finalize().await.map(|f| {
            shared.park_ssh(&f.nodes);
            json(&f)
        }),
        (_, "" | "plan" | "apply" | "pause" | "resume" | "rollback" | "finalize") => {
            return error_body(405, &format!("{method} is not allowed on {path}"))
        }
        _ => return error_body(404, &format!("no such migration endpoint {path}")),
    };
    match result {
        Ok(body) => (200, body),
        Err(e) => {
            let status = match e {
                ControllerError::Stopped => 503,
                ControllerError::Store(_) => 500,
                _ => 409,
            };
            if status == 500 {
                error!(error = %e, "migration store failed");
            }
            error_body(status, &e.to_string())
        }
    }
}

fn options(body: &[u8]) -> Result<ApplyOptions, (u16, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ApplyOptions::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| error_body(400, &format!("bad migration options: {e}")))
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot encode: {e}\"}}"))
}

fn error_body(status: u16, message: &str) -> (u16, String) {
    (status, serde_json::json!({ "error": message }).to_string())
}
