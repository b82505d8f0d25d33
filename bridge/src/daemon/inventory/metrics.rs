//! The inventory's metrics: nodes by source, Nodes not served, watch
//! restarts, and the time of the last sync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use sshbridge_core::metrics::{Counter, EncodeLabelSet, Family, Gauge};
use sshbridge_kubeapi::inventory::WatchStatus;

use super::View;
use crate::metrics::BridgeMetrics;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceL {
    source: String,
}

/// The inventory's series, registered in the bridge's registry.
#[derive(Debug, Clone)]
pub(super) struct InventoryMetrics {
    nodes: Family<SourceL, Gauge>,
    unservable: Gauge,
    restarts: Counter,
    restarts_seen: Arc<AtomicU64>,
    last_sync: Gauge,
}

impl InventoryMetrics {
    pub(super) fn register(bridge: &BridgeMetrics) -> Self {
        let r = bridge.registry();
        let m = InventoryMetrics {
            nodes: Family::default(),
            unservable: Gauge::default(),
            restarts: Counter::default(),
            restarts_seen: Arc::default(),
            last_sync: Gauge::default(),
        };
        r.register(
            "sshbridge_inventory_nodes",
            "Nodes the bridge serves, by where they came from (static: [[node]] entries; kubernetes: the Node watch).",
            m.nodes.clone(),
        );
        r.register(
            "sshbridge_inventory_unservable_nodes",
            "Nodes the Kubernetes API lists that the bridge does not serve (no preferred address, no known host key, invalid annotation); see /report.",
            m.unservable.clone(),
        );
        r.register(
            "sshbridge_inventory_watch_restarts",
            "Failures of the Node watch, each followed by a retry with backoff.",
            m.restarts.clone(),
        );
        r.register(
            "sshbridge_inventory_last_sync_timestamp_seconds",
            "Unix time the Kubernetes API last answered the Node watch; 0 before the first answer.",
            m.last_sync.clone(),
        );
        m
    }

    pub(super) fn refresh(&self, view: &View, watch: Option<&WatchStatus>) {
        self.nodes
            .get_or_create(&SourceL {
                source: "static".into(),
            })
            .set(view.static_nodes.len() as i64);
        self.nodes
            .get_or_create(&SourceL {
                source: "kubernetes".into(),
            })
            .set(view.discovered.len() as i64);
        self.unservable.set(view.unservable.len() as i64);
        let Some(w) = watch else { return };
        let seen = self.restarts_seen.swap(w.restarts, Ordering::Relaxed);
        self.restarts.inc_by(w.restarts.saturating_sub(seen));
        let at = w
            .last_sync
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        self.last_sync.set(at);
    }
}
