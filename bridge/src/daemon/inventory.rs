//! Nodes from the Kubernetes API (`[inventory] source = "kubernetes"`):
//! the Node watch runs as a daemon task, and each inventory it publishes
//! is merged with the file's `[[node]]` entries and applied exactly like a
//! SIGHUP reload (new nodes connect, removed ones drain, a changed address
//! reconnects that node only). Static entries override discovered nodes of
//! the same name. A discovered node is served only if known_hosts has a
//! host key (or a `@cert-authority` line) for it; the others, and Nodes
//! without a usable address, are listed in the report with the reason.

mod merge;
mod metrics;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sshbridge_config::{Config, InventorySource};
use sshbridge_kubeapi::inventory::{self as kube_inventory, Published, WatchHealth};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Daemon, ReloadSummary, StartError};
use crate::admin::Check;
use crate::metrics::BridgeMetrics;
use crate::report::{rfc3339, InventoryReport, WatchReport};
use crate::tasks::Tasks;

pub(super) use merge::{merge, View};

/// How long to wait before building the API client again after it failed.
const CLIENT_RETRY: Duration = Duration::from_secs(5);

/// The inventory side of the daemon's shared state.
pub(super) struct InventoryState {
    source: InventorySource,
    /// The configuration as loaded from the file (static nodes only).
    file: Mutex<Config>,
    /// The last inventory the watch published.
    discovered: Mutex<Published>,
    /// Where the applied nodes came from, and the Nodes not served.
    view: Mutex<View>,
    /// The watch's status and its updates; `None` with a static inventory.
    watch: Option<(WatchHealth, watch::Receiver<Published>)>,
    grace: Duration,
    started: Instant,
    metrics: metrics::InventoryMetrics,
}

impl InventoryState {
    /// The state for `file`, with the Node watch started under `tasks`
    /// when the inventory comes from Kubernetes.
    pub(super) fn start(
        file: &Config,
        view: View,
        tasks: &Tasks,
        root: &CancellationToken,
        bridge_metrics: &BridgeMetrics,
    ) -> InventoryState {
        let settings = file.inventory.clone();
        let watch = match (settings.source, &file.kubernetes) {
            (InventorySource::Kubernetes, Some(kube)) => {
                let (tx, rx) = watch::channel(Published::default());
                let health = WatchHealth::default();
                let (stop, kube, h) = (root.child_token(), kube.clone(), health.clone());
                tasks.spawn("node inventory watch", async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = watch_nodes(kube, settings, tx, h) => {}
                    }
                });
                Some((health, rx))
            }
            _ => None,
        };
        let state = InventoryState {
            source: file.inventory.source,
            file: Mutex::new(file.clone()),
            discovered: Mutex::new(Published::default()),
            view: Mutex::new(view),
            watch,
            grace: file.inventory.watch_grace,
            started: Instant::now(),
            metrics: metrics::InventoryMetrics::register(bridge_metrics),
        };
        state
            .metrics
            .refresh(&state.view(), state.health().as_ref());
        state
    }

    fn view(&self) -> View {
        lock(&self.view).clone()
    }

    fn health(&self) -> Option<kube_inventory::WatchStatus> {
        self.watch.as_ref().map(|(h, _)| h.status())
    }

    /// Updates the metrics from the view and the watch (at each scrape).
    pub(super) fn refresh_metrics(&self) {
        self.metrics.refresh(&self.view(), self.health().as_ref());
    }

    /// The `inventory` readiness check: the first list arrived, and the
    /// watch has not been failing for longer than `watch_grace`.
    pub(super) fn readiness(&self) -> Option<Check> {
        let status = self.health()?;
        let served = lock(&self.view).discovered.len();
        let error = status.last_error.as_deref().unwrap_or("no answer yet");
        let result = match status.failing_since {
            _ if !status.synced => Err(format!(
                "no full node list from the Kubernetes API yet (for {}s): {error}",
                self.started.elapsed().as_secs()
            )),
            Some(since) if since.elapsed().unwrap_or_default() >= self.grace => Err(format!(
                "the node watch has failed since {} ({} restarts): {error}; the last known \
                 nodes ({served} discovered) are still served",
                rfc3339(since),
                status.restarts
            )),
            _ => Ok(()),
        };
        Some(Check {
            name: "inventory".into(),
            result,
        })
    }

    /// The report's `inventory` part; `None` with a static inventory.
    pub(super) fn report(&self) -> Option<InventoryReport> {
        let status = self.health()?;
        let view = self.view();
        Some(InventoryReport {
            source: self.source.as_str().to_string(),
            static_nodes: view.static_nodes,
            discovered_nodes: view.discovered,
            unservable: view.unservable,
            watch: WatchReport {
                synced: status.synced,
                last_sync: status.last_sync.map(rfc3339),
                failing_since: status.failing_since.map(rfc3339),
                last_error: status.last_error,
                restarts: status.restarts,
            },
        })
    }
}

/// Builds the API client (retrying while it cannot) and runs the watch.
async fn watch_nodes(
    kube: sshbridge_config::Kubernetes,
    settings: sshbridge_config::Inventory,
    tx: watch::Sender<Published>,
    health: WatchHealth,
) {
    let client = loop {
        match sshbridge_kubeapi::client(&kube).await {
            Ok(c) => break c,
            Err(e) => {
                warn!("node inventory: {e}; retrying in {CLIENT_RETRY:?}");
                health.failed(e.to_string());
                tokio::time::sleep(CLIENT_RETRY).await;
            }
        }
    };
    let server = kube.kubeconfig.as_ref().map_or_else(
        || "the in-cluster apiserver".to_string(),
        |p| format!("the apiserver of kubeconfig {}", p.display()),
    );
    kube_inventory::run(client, settings, server, tx, health).await;
}

impl Daemon {
    /// Applies a configuration read from the file (start or SIGHUP): its
    /// static nodes, merged with the nodes last discovered. New nodes
    /// connect, removed nodes drain and close, unchanged nodes keep their
    /// sessions and streams. Listener addresses, `[kubernetes]` and
    /// `[inventory]` are not re-read; changing them needs a restart.
    pub fn reload(&self, config: Config) -> Result<ReloadSummary, StartError> {
        let inv = &self.shared.inventory;
        let old = lock(&inv.file).clone();
        if old.kubernetes != config.kubernetes || old.inventory != config.inventory {
            warn!("[kubernetes] or [inventory] settings changed; they take effect at the next restart");
        }
        let discovered = lock(&inv.discovered).clone();
        let merged = merge(&config, &discovered);
        let summary = self.apply(merged.config)?;
        *lock(&inv.file) = config;
        *lock(&inv.view) = merged.view;
        Ok(summary)
    }

    /// Updates from the Node watch: each value is the whole inventory of
    /// one moment, for [`Daemon::apply_inventory`]. `None` with a static
    /// inventory.
    pub fn inventory_updates(&self) -> Option<watch::Receiver<Published>> {
        self.shared
            .inventory
            .watch
            .as_ref()
            .map(|(_, rx)| rx.clone())
    }

    /// Applies an inventory from the watch, merged with the file's static
    /// nodes, like a reload.
    pub fn apply_inventory(&self, discovered: Published) -> Result<ReloadSummary, StartError> {
        let inv = &self.shared.inventory;
        let file = lock(&inv.file).clone();
        let merged = merge(&file, &discovered);
        let summary = self.apply(merged.config)?;
        *lock(&inv.discovered) = discovered;
        *lock(&inv.view) = merged.view;
        Ok(summary)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
