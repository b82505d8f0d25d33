//! The migration from SSH tunnels to Konnectivity, node by node.
//!
//! Not built yet: the plan, the per-node state machine, the state stores and
//! the path comparison arrive with the migration issue. Until then this crate
//! only re-exports the route type that the daemon and the migration share.

pub use sshbridge_config::Route;
