//! The API client: from `[kubernetes] kubeconfig` (and `context`), or the
//! in-cluster service account when no kubeconfig is set.

use std::path::PathBuf;

use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use sshbridge_config::Kubernetes;

/// Why no API client could be built; each names where the settings came
/// from and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read or parsed.
    #[error("kubernetes.kubeconfig {path}: cannot read it: {source}; check the file is a kubeconfig (YAML) readable by the bridge")]
    ReadKubeconfig {
        /// The file.
        path: PathBuf,
        /// The parse or read error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig was read but its context, cluster, user or
    /// credentials do not make a usable configuration.
    #[error("kubernetes.kubeconfig {path}{context}: {source}; check the context, its cluster's server and CA, and the user's credentials")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// `" (context NAME)"`, or empty for the current context.
        context: String,
        /// What kube-rs found wrong.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No kubeconfig is set and the process is not in a pod with a
    /// service account.
    #[error("[kubernetes] has no kubeconfig and the in-cluster service account is not usable: {0}; set kubernetes.kubeconfig, or run the bridge in a pod with a service account token mounted")]
    InCluster(#[source] kube::config::InClusterError),
    /// The configuration was valid but no HTTP client could be made from
    /// it (TLS material rejected).
    #[error("cannot build the Kubernetes API client for {server}: {source}; check the CA and client certificate of the kubeconfig")]
    Build {
        /// The API server URL.
        server: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

/// Builds the API client of `settings`: the kubeconfig's context (or its
/// current context), else the in-cluster service account.
pub async fn client(settings: &Kubernetes) -> Result<kube::Client, ClientError> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| ClientError::ReadKubeconfig {
                    path: path.clone(),
                    source,
                })?;
            let options = KubeConfigOptions {
                context: settings.context.clone(),
                ..KubeConfigOptions::default()
            };
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.clone(),
                    context: settings
                        .context
                        .as_ref()
                        .map(|c| format!(" (context {c})"))
                        .unwrap_or_default(),
                    source,
                })?
        }
        None => Config::incluster().map_err(ClientError::InCluster)?,
    };
    let server = config.cluster_url.to_string();
    kube::Client::try_from(config).map_err(|source| ClientError::Build { server, source })
}
