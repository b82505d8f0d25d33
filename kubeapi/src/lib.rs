//! sshbridge's access to the Kubernetes API: the client built from
//! `[kubernetes]`, and what the bridge reads through it.
//!
//! What it does: build one [`kube::Client`] from a kubeconfig (or the
//! in-cluster service account); watch the Node objects and turn them into
//! the bridge's nodes ([`inventory`]); review Konnectivity agents' service
//! account tokens ([`tokenreview`]); keep the migration record of several
//! bridges in one ConfigMap ([`record`]); elect the one bridge that drives
//! it with a Lease ([`lease`]); publish and list the per-bridge status
//! objects of a highly available control plane ([`status`]).
//!
//! What it does not: decide anything about routing; the daemon owns that.

#![warn(missing_docs)]

mod client;
pub mod inventory;
pub mod lease;
pub mod record;
pub mod status;
pub mod tokenreview;

pub use client::{client, ClientError};
