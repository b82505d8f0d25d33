//! sshbridge: carries kube-apiserver's egress (HTTP CONNECT, later
//! Konnectivity gRPC) to the nodes of a cluster over one SSH session per
//! node, with host keys always verified.
//!
//! Data flows one way: egress frontend -> router -> path -> node. This crate
//! holds the daemon's parts; the binary (`src/main.rs`) only parses the
//! command line, binds what the config names and wires these parts up.
//!
//! Not here: configuration parsing (`sshbridge-config`) and the migration
//! logic (`sshbridge-migrate`).

pub mod admin;
pub mod agent;
pub mod backoff;
pub mod daemon;
pub mod egress;
pub mod handshake;
pub mod health;
pub mod konnectivity;
pub mod manifests;
pub mod memory;
pub mod metrics;
pub mod path;
pub mod report;
pub mod router;
pub mod sim;
pub mod ssh;
pub mod tls;
