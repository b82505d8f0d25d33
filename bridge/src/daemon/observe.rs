//! What the admin API shows of a running daemon: readiness checks,
//! metrics, and the report document.

use std::time::SystemTime;

use crate::admin::{AdminState, Check};
use crate::health::PathState;
use crate::report::{BridgeInfo, Report};

use super::Shared;

impl Shared {
    pub(super) fn report(&self) -> Report {
        let snap = self.snapshot();
        let nodes = snap
            .config
            .nodes
            .iter()
            .map(|n| snap.nodes[&n.name].report())
            .collect();
        let bridge = BridgeInfo {
            id: snap.config.bridge.id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.started.elapsed().as_secs(),
        };
        let mut report = Report::new(bridge, nodes, SystemTime::now());
        report.inventory = self.inventory.report();
        report.ssh_certificate = self.certificate_report();
        report.bridges = self.peers.report(&snap);
        report
    }
}

impl AdminState for Shared {
    fn readiness(&self) -> Vec<Check> {
        let egress = if self.egress_listeners == 0 {
            Err("no egress listener is configured".to_string())
        } else if self.stop_accepting.is_cancelled() {
            Err("shutting down: no new streams are accepted".to_string())
        } else {
            Ok(())
        };
        let snap = self.snapshot();
        let mut down = Vec::new();
        let mut any_up = false;
        for spec in &snap.config.nodes {
            let node = &snap.nodes[&spec.name];
            // A parked SSH session is closed on purpose, neither up nor failing.
            let paths = node.paths.values().filter(|p| !p.path.parked());
            for watch in paths {
                let health = watch.prober.snapshot();
                if health.state == PathState::Up {
                    any_up = true;
                } else {
                    let why = health
                        .last_error
                        .unwrap_or_else(|| "no probe has passed yet".into());
                    down.push(format!(
                        "{} {} ({}): {why}",
                        spec.name, health.path, health.state
                    ));
                }
            }
        }
        let nodes = if any_up {
            Ok(())
        } else if snap.config.nodes.is_empty() {
            Err("no nodes are configured".to_string())
        } else {
            Err(format!("no node path is up: {}", down.join("; ")))
        };
        let mut checks = vec![
            Check {
                name: "egress".into(),
                result: egress,
            },
            Check {
                name: "node-paths".into(),
                result: nodes,
            },
        ];
        checks.extend(self.inventory.readiness());
        checks.extend(self.certificate_check());
        checks
    }

    fn metrics(&self) -> String {
        let snap = self.snapshot();
        for node in snap.nodes.values() {
            node.refresh_metrics();
        }
        self.metrics
            .set_tunnel_states(snap.nodes.values().map(|n| n.tunnel.state()));
        self.inventory.refresh_metrics();
        self.refresh_certificate_metrics();
        self.metrics.render()
    }

    async fn report(&self) -> String {
        Shared::report(self).to_json()
    }

    fn migration_routes(self: &std::sync::Arc<Self>) -> axum::Router {
        super::migration_api::routes(self.clone())
    }
}
