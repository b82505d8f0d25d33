//! Konnectivity (apiserver-network-proxy) in the bridge: the wire types,
//! the agent-facing server, and the Konnectivity path of each node.
//!
//! Agents dial [`server::serve`] over TLS and open one `AgentService.Connect`
//! stream each. The [`Hub`] maps each agent to the nodes its
//! `agentIdentifiers` name (node name, node address, overlapping pod CIDR)
//! and dials through them: DIAL_REQ with a fresh non-zero random, DIAL_RSP
//! with a connectID or an error, DATA both ways, CLOSE_REQ/CLOSE_RSP, and
//! DIAL_CLS when the dialer gives up before the answer. Several agents may
//! serve a node: streams go round-robin over the ones that have not sent
//! DRAIN; draining agents are used only when no other is connected. An agent
//! that reconnects with the same ID replaces its old stream, whose
//! connections end. An agent whose stream ends takes its connections and
//! pending dials with it, at once.
//!
//! # Head-of-line policy
//!
//! All connections through an agent share its one gRPC stream, and the
//! protocol has no per-connection flow control. Two bad answers exist:
//! never wait for a slow client (then a download faster than its reader is
//! cut off), or wait for it without limit (then one stuck client stalls
//! every other connection of the agent, upstream's head-of-line bug). The
//! policy here: DATA for a connection goes to that connection's own buffer
//! of [`Options::max_conn_buffer`] bytes (4 MiB by default; each chunk is
//! charged 64 bytes extra so tiny chunks are bounded too). While a buffer
//! is full the stream's reader waits for that client, so a slower reader
//! slows the agent and the target behind it, and the download arrives
//! whole; the other connections of the agent wait meanwhile. A client that
//! takes no bytes at all for [`Options::stall_timeout`] (30 s by default)
//! has its connection closed (CLOSE_REQ to the agent, an error naming the
//! timeout for the reader), so no client stalls the agent longer than
//! that. Outbound, the DATA of all connections shares one bounded queue
//! per agent: a slow agent link slows writers through that agent, as TCP
//! would.
//!
//! # Half-close
//!
//! Konnectivity has no half-close. Shutting down a stream's write half only
//! stops its writes; CLOSE_REQ is sent when the stream is dropped, so a
//! client that half-closes still gets the target's answer.

mod agent;
pub mod flow;
pub mod hub;
pub mod identifiers;
pub mod proto;
pub mod server;
mod stats;
mod stream;

pub use flow::Extensions;
pub use hub::{AgentInfo, Flow, Hub, Options};
pub use stats::Stats;
