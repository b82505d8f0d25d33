//! The bridge's metric set: the registry, the bridge-wide series, and the
//! start (and removal) of every per-node and per-path series.

use std::sync::Arc;

use sshbridge_core::metrics::{Counter, Family, Gauge, Registry};

use super::families::Families;
use super::handles::{NodeMetrics, PathMetrics};
use super::labels::*;
use crate::konnectivity::events::HubEvents;
use crate::ssh::TunnelState;

/// The bridge's metrics. Cloning shares the registry.
#[derive(Debug, Clone)]
pub struct BridgeMetrics {
    registry: Arc<Registry>,
    families: Families,
}

impl BridgeMetrics {
    /// A registry holding `sshbridge_build_info{version}` and every
    /// bridge-wide series at zero.
    pub fn new(version: &str) -> Self {
        let registry = Arc::new(Registry::new());
        let build_info = Family::<VersionL, Gauge>::default();
        registry.register(
            "sshbridge_build_info",
            "Always 1; the version label names the running sshbridge build.",
            build_info.clone(),
        );
        build_info
            .get_or_create(&VersionL {
                version: version.to_string(),
            })
            .set(1);
        let families = Families::register(&registry);
        for state in Tunnel::ALL {
            let _ = families.tunnels.get_or_create(&TunnelL {
                state: Tunnel(state),
            });
        }
        let _ = families.dial_failures.get_or_create(&forbidden());
        let _ = families.agents_cut.get_or_create(&AgentCutL {
            reason: AgentCut::ControlBacklog,
        });
        BridgeMetrics { registry, families }
    }

    /// The underlying registry (other crates register their families here).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The text exposition for `/metrics`.
    pub fn render(&self) -> String {
        self.registry.render()
    }

    /// Handles for one node's SSH-session counters, created at zero.
    pub fn node(&self, node: &str) -> NodeMetrics {
        NodeMetrics::new(&self.families, node)
    }

    /// Handles for one node's path (`ssh` or `konnectivity`), created at zero.
    pub fn path(&self, node: &str, path: &'static str) -> PathMetrics {
        PathMetrics::new(&self.families, node, PathLabel::from_name(path))
    }

    /// Sets `sshbridge_tunnels{state}` from the current state of every
    /// node's tunnel (states not listed count 0).
    pub fn set_tunnel_states(&self, states: impl IntoIterator<Item = TunnelState>) {
        let mut counts = [0i64; Tunnel::ALL.len()];
        for s in states {
            if let Some(i) = Tunnel::ALL.iter().position(|t| *t == s) {
                counts[i] += 1;
            }
        }
        for (state, n) in Tunnel::ALL.into_iter().zip(counts) {
            self.families
                .tunnels
                .get_or_create(&TunnelL {
                    state: Tunnel(state),
                })
                .set(n);
        }
    }

    /// The refused and timed-out handshake counters of `listener`.
    pub fn tls_handshake_counters(&self, listener: Listener) -> (Arc<Counter>, Arc<Counter>) {
        let l = ListenerL { listener };
        (
            Arc::new(self.families.tls_refused.get_or_create(&l).clone()),
            Arc::new(self.families.tls_timeouts.get_or_create(&l).clone()),
        )
    }

    /// Counts a dial refused because its target matched no node.
    pub fn dial_forbidden(&self) {
        self.families
            .dial_failures
            .get_or_create(&forbidden())
            .inc();
    }

    /// Stops rendering every series of `node` (it left the config).
    pub fn remove_node(&self, node: &str) {
        NodeMetrics::remove(&self.families, node);
        for path in PathLabel::NODE_PATHS {
            PathMetrics::remove(&self.families, node, path);
        }
    }
}

/// Agent streams the hub ended, counted as it reports them.
impl HubEvents for BridgeMetrics {
    fn agent_cut_for_control_backlog(&self) {
        let labels = AgentCutL {
            reason: AgentCut::ControlBacklog,
        };
        self.families.agents_cut.get_or_create(&labels).inc();
    }
}

fn forbidden() -> DialL {
    DialL {
        node: String::new(),
        path: PathLabel::None,
        reason: DialFailure::Forbidden,
    }
}
