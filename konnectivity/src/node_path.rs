//! One node's Konnectivity agents as one of its [`Path`]s.

use sshbridge_core::path::{DialFuture, Liveness, Path, PathStats};
use sshbridge_core::PathKind;

use crate::Hub;

/// The Konnectivity path of one node: the bridge's agent hub, seen from
/// that node.
#[derive(Clone)]
pub struct NodePath {
    hub: Hub,
    node: String,
}

impl NodePath {
    /// `node`'s path through `hub`.
    pub fn new(hub: Hub, node: impl Into<String>) -> NodePath {
        NodePath {
            hub,
            node: node.into(),
        }
    }
}

impl Path for NodePath {
    fn kind(&self) -> PathKind {
        PathKind::Konnectivity
    }

    fn dial<'a>(&'a self, host: &'a str, port: u16) -> DialFuture<'a> {
        Box::pin(self.hub.dial(&self.node, host, port))
    }

    fn is_up(&self) -> bool {
        *self.hub.subscribe(&self.node).borrow() > 0
    }

    fn liveness(&self) -> Liveness {
        Liveness::follow(self.hub.subscribe(&self.node), |agents| *agents > 0)
    }

    fn stats(&self) -> PathStats {
        let s = self.hub.stats(&self.node);
        PathStats {
            open_streams: s.open_streams,
            bytes_sent: s.bytes_to_node,
            bytes_received: s.bytes_from_node,
            reconnects: 0,
            last_error: None,
            flow_control: self.hub.flow_control(&self.node).map(str::to_string),
            agents: Some(self.hub.agents(&self.node).len() as u64),
        }
    }
}
