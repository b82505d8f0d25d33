//! sshbridge's access to the Kubernetes API: the client built from
//! `[kubernetes]`, and what the bridge reads through it.
//!
//! What it does: build one [`kube::Client`] from a kubeconfig (or the
//! in-cluster service account), and review Konnectivity agents' service
//! account tokens with it ([`tokenreview`]).
//!
//! What it does not: decide anything about routing; the daemon owns that.

#![warn(missing_docs)]

mod client;
pub mod tokenreview;

pub use client::{client, ClientError};
