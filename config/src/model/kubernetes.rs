//! `[kubernetes]`: how the bridge reaches the Kubernetes API (node
//! inventory, agent token reviews).

use std::path::PathBuf;

/// `[kubernetes]`: the API server the bridge talks to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Kubernetes {
    /// A kubeconfig file; `None` uses the pod's in-cluster service account
    /// (`KUBERNETES_SERVICE_HOST`/`_PORT` and
    /// `/var/run/secrets/kubernetes.io/serviceaccount/`).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use; `None` uses its `current-context`.
    pub context: Option<String>,
}

/// `[inventory] source`: where the bridge's nodes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InventorySource {
    /// `"static"` (default): the `[[node]]` entries only.
    #[default]
    Static,
    /// `"kubernetes"`: a watch on the API's Node objects, plus the
    /// `[[node]]` entries, which override discovered nodes of the same name.
    Kubernetes,
}

impl InventorySource {
    /// The name used in the config file and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            InventorySource::Static => "static",
            InventorySource::Kubernetes => "kubernetes",
        }
    }
}

/// `[inventory]`: where the node list comes from and how a discovered
/// Node object becomes a node of the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// Static only, or static plus the Kubernetes API.
    pub source: InventorySource,
    /// Label selector of the watched nodes; `None` watches every node.
    pub node_selector: Option<String>,
    /// `status.addresses` types, in order of preference; the first type
    /// with an IP address gives the node's address.
    pub address_types: Vec<String>,
    /// sshd port of discovered nodes (unless their annotation names one).
    pub ssh_port: u16,
    /// Annotation whose value (`host:port` or `host`) is where a node's
    /// sshd is reached, instead of its address.
    pub ssh_address_annotation: String,
    /// How long the watch may fail before `/readyz` says so.
    pub watch_grace: std::time::Duration,
}

/// The `address_types` a Node's `status.addresses` may carry.
pub const NODE_ADDRESS_TYPES: [&str; 5] = [
    "InternalIP",
    "ExternalIP",
    "Hostname",
    "InternalDNS",
    "ExternalDNS",
];

/// `[ha]`: what a bridge shares with the other bridges of a highly
/// available control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ha {
    /// `status = "kubernetes:NAMESPACE"`: the namespace of the per-bridge
    /// status objects; `None` (the default) publishes and reads nothing.
    pub status_namespace: Option<String>,
    /// How often the bridge publishes its status and reads the others';
    /// a bridge silent for 3 intervals is gone.
    pub status_interval: std::time::Duration,
}
