//! The test kit: real OpenSSH `sshd` nodes, TLS kubelet stand-ins, pod
//! servers, the `sshbridge` daemon as a child process and an
//! apiserver-like CONNECT client, Konnectivity agents as child processes
//! and a gRPC egress client, and the daemon's admin API and report
//! CLI as an operator uses them.
//!
//! Everything listens on its own 127.x address with an OS-picked port;
//! every wait is bounded. Not here: assertions about the bridge (those are
//! in `tests/e2e/`).

pub mod admin;
pub mod agent;
pub mod apiserver;
pub mod bridge;
pub mod client;
pub mod cluster;
pub mod gate;
pub mod grpc;
pub mod hostkeys;
pub mod inventory;
pub mod konnectivity;
pub mod lb;
pub mod manifests;
pub mod migration;
pub mod net;
pub mod netlab;
pub mod node_sshd;
pub mod pods;
pub mod sshd;
pub mod tokenreview;
pub mod trust;
pub mod upstream;
pub mod usercert;

pub use admin::{metric, ssh_last_error, ssh_state, sshbridge_cli, AdminAnswer, CliOutput};
pub use agent::{Agent, AgentSpec};
pub use bridge::{Bridge, BridgeConfig, KonnectivityConfig, MigrationTuning, NodeEntry};
pub use client::{kubelet_get, Connected, Egress, Stream};
pub use cluster::{Cluster, Node};
pub use grpc::{GrpcDial, GrpcEgress};
pub use hostkeys::KnownHostsStyle;
pub use konnectivity::{dials_ok, konnectivity_path, konnectivity_state};
pub use migration::{phase_of, status_summary, Load, LoadCounts};
pub use pods::{sha256_hex, Behavior, FirehoseCheck, PodServer};
pub use sshd::SshdNode;

/// Installs a test tracing subscriber once (honours `RUST_LOG`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// The last `lines` lines of `text`.
pub fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
