//! sshbridge: carries kube-apiserver's egress (HTTP CONNECT and
//! Konnectivity gRPC) to the nodes of a cluster over one SSH session per
//! node (host keys always verified) or a Konnectivity agent.
//!
//! Data flows one way: egress frontend -> router -> path -> node. This crate
//! holds the daemon's parts; the binary (`src/main.rs`) only parses the
//! command line, binds what the config names and wires these parts up.
//!
//! Not here: configuration parsing (`sshbridge-config`), the migration
//! logic (`sshbridge-migrate`), the shared small types (`sshbridge-core`),
//! the SSH path (`sshbridge-ssh`), Konnectivity (`sshbridge-konnectivity`),
//! reports (`sshbridge-report`), manifests (`sshbridge-manifests`) and the
//! simulation kit (`sshbridge-sim`, only with the `demo` feature).

pub mod admin;
pub mod admin_client;
pub mod daemon;
pub mod egress;
pub mod health;
pub mod metrics {
    //! The bridge's metric set ([`BridgeMetrics`]) on the registry of
    //! [`sshbridge_core::metrics`] (`prometheus-client`), re-exported here
    //! so the daemon names one module for both. Series are counted where
    //! events happen: dials and streams by the daemon, probes and health
    //! changes through [`crate::health::HealthEvents`], SSH sessions
    //! through [`crate::ssh::TunnelEvents`].

    mod families;
    mod handles;
    mod labels;
    mod metered;
    mod set;

    pub use families::{DIAL_BUCKETS, PROBE_BUCKETS};
    pub use handles::{NodeMetrics, PathMetrics};
    pub use labels::{DialFailure, Listener, PathLabel};
    pub use set::BridgeMetrics;
    pub use sshbridge_core::metrics::*;

    #[cfg(test)]
    mod tests;
}
pub mod router;

// The crates split out of this one, under their old module names.
pub use sshbridge_core::{backoff, handshake, memory, path, tasks, tls};
pub use sshbridge_konnectivity as konnectivity;
pub use sshbridge_konnectivity::agent;
pub use sshbridge_kubeapi as kubeapi;
pub use sshbridge_manifests as manifests;
pub use sshbridge_report as report;
pub use sshbridge_ssh as ssh;
