//! The migration of an sshbridge's nodes from SSH tunnels to Konnectivity,
//! node by node: preflight and plan, the per-node state machine
//! (`ssh -> shadow -> cutover -> soak -> done`, or `rolled_back`), the shadow
//! comparison of both paths, the durable state store, and the controller
//! task that drives it all and resumes after a crash.
//!
//! It does not open sockets, probe anything itself, or know the daemon's
//! types: the daemon implements [`Fleet`] (list nodes, probe a path, read a
//! path's live counters, set a route) and talks to a [`Controller`]. It does
//! not render manifests or serve the admin API either; those are the
//! daemon's and the CLI's.

#![warn(missing_docs)]

pub mod compare;
pub mod controller;
pub mod fleet;
pub mod peers;
pub mod plan;
pub mod settings;
pub mod state;
pub mod store;

pub use compare::{compare, Comparison, PathSummary};
pub use controller::{
    Controller, ControllerError, FinalState, NodeStatus, Role, RollbackTarget, Status,
};
pub use fleet::{Fleet, LiveCounters, NodeView, ProbeSample, RouteError};
pub use peers::{judge as judge_peers, NodeHealth, PathView, PeerVerdict, PeerView};
pub use plan::{plan, Plan};
pub use settings::{ApplyOptions, BatchSpec, Settings};
pub use sshbridge_config::Route;
pub use state::{MigrationState, NodePhase, RunPhase, SCHEMA};
pub use store::{
    decode, encode, open_store, DecodeError, FileStore, Store, StoreError, StoreSpec, FOLLOW_EVERY,
};
