//! What the daemon shows its caller: the nodes now, and a handle that
//! cuts everything at once.

use sshbridge_config::Route;
use tokio_util::sync::CancellationToken;

use super::Daemon;
use crate::ssh::{TunnelState, TunnelStats};

/// What a node looks like right now, for the demo.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Active path.
    pub route: Route,
    /// SSH tunnel state.
    pub state: TunnelState,
    /// SSH tunnel counters.
    pub stats: TunnelStats,
}

impl Daemon {
    /// The nodes of the current configuration, in config order.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        let snap = self.shared.snapshot();
        snap.config
            .nodes
            .iter()
            .map(|spec| {
                let tunnel = &snap.nodes[&spec.name].tunnel;
                NodeStatus {
                    name: spec.name.clone(),
                    route: snap.nodes[&spec.name].route(),
                    state: tunnel.state(),
                    stats: tunnel.stats(),
                }
            })
            .collect()
    }

    /// A handle that cuts everything at once (a second signal), usable
    /// while [`Daemon::shutdown`] runs.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            tokens: [
                self.life.stop_accepting.clone(),
                self.life.abort.clone(),
                self.root.clone(),
            ],
        }
    }
}

/// Cuts every stream and tunnel of a daemon at once.
#[derive(Clone)]
pub struct AbortHandle {
    tokens: [CancellationToken; 3],
}

impl AbortHandle {
    /// Stops accepting, cuts open streams and stops every tunnel.
    pub fn abort(&self) {
        self.tokens.iter().for_each(CancellationToken::cancel);
    }
}
