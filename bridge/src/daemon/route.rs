//! Where new streams go: a node's route, switched by the migration, and
//! the daemon's [`Dial`] for the egress frontends.

use std::sync::Arc;

use sshbridge_config::Route;
use tracing::info;

use super::node::NodeEntry;
use super::{RouteChangeError, Shared, Snapshot};
use crate::egress::{Dial, Dialed, EgressError};
use crate::router::{Decision, RouteError};

impl Shared {
    /// Parks the SSH sessions of `nodes` whose migration is finalized:
    /// each closes once its open streams end, and reconnects only if the
    /// node is routed back to ssh.
    pub(super) fn park_ssh(&self, nodes: &[String]) {
        let snap = self.snapshot();
        for name in nodes {
            if let Some(node) = snap
                .nodes
                .get(name)
                .filter(|n| n.route() == Route::Konnectivity)
            {
                info!(node = %name, "migration finalized: closing the node's SSH session");
                node.tunnel.park();
            }
        }
    }

    pub(super) fn set_route(&self, node: &str, route: Route) -> Result<Route, RouteChangeError> {
        let snap = self.snapshot();
        let entry = snap
            .nodes
            .get(node)
            .ok_or_else(|| RouteChangeError::UnknownNode(node.to_string()))?;
        if route == Route::Konnectivity && self.hub.is_none() {
            return Err(RouteChangeError::NoKonnectivity(node.to_string()));
        }
        if route == Route::Ssh && entry.ssh_parked() {
            info!(
                node,
                "routing back to ssh: reconnecting the parked SSH session"
            );
            entry.tunnel.unpark();
        }
        let previous = entry.route.send_replace(route);
        if previous != route {
            info!(node, from = %previous, to = %route, "route changed");
        }
        Ok(previous)
    }
}

/// A request's route: the node the table chose, in the snapshot it chose
/// from (a reload between routing and dialing does not re-route it).
pub(crate) struct Routed {
    snap: Arc<Snapshot>,
    decision: Decision,
}

impl Dial for Shared {
    type Route = Routed;

    fn route(&self, host: &str, port: u16) -> Result<Routed, EgressError> {
        let snap = self.snapshot();
        let healthy = |name: &str| snap.nodes.get(name).is_some_and(NodeEntry::healthy);
        let decision = snap.table.resolve(host, port, healthy).inspect_err(|e| {
            if matches!(e, RouteError::Forbidden { .. }) {
                self.metrics.dial_forbidden();
            }
        })?;
        Ok(Routed { snap, decision })
    }

    async fn dial(&self, route: Routed) -> Result<Dialed, EgressError> {
        let Routed { snap, decision } = route;
        let node = &snap.nodes[&decision.node];
        let stream = node
            .dial(
                &decision.host,
                decision.port,
                snap.config.egress.dial_timeout,
            )
            .await?;
        let stream = crate::egress::idle::limit(stream, snap.config.egress.stream_idle_timeout);
        Ok(Dialed {
            stream,
            node: decision.node,
        })
    }

    fn home(&self, route: &Routed) -> Option<tokio::runtime::Handle> {
        route.snap.nodes.get(&route.decision.node)?.home()
    }
}
