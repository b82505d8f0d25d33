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
