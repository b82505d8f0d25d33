//! Konnectivity (apiserver-network-proxy) in the bridge: the wire types,
//! the agent-facing server, and the Konnectivity path of each node.

pub mod proto;
