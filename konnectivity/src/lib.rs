//! sshbridge-konnectivity: Konnectivity (apiserver-network-proxy) for
//! sshbridge: the wire types ([`proto`], [`flow`]), the agent-facing server
//! and the Konnectivity path of each node (feature `server`), and the
//! library of the agent program `sshbridge agent` (feature `agent`, module
//! [`agent`]). Not here: the daemon's egress frontends and routing
//! (`sshbridge`), anything SSH.
//!
//! Agents dial [`server::serve`] over TLS and open one `AgentService.Connect`
//! stream each. The [`Hub`] maps each agent to the nodes its
//! `agentIdentifiers` name (node name, node address, overlapping pod CIDR)
//! and dials through them: DIAL_REQ with a fresh non-zero random, DIAL_RSP
//! with a connectID or an error, DATA both ways, CLOSE_REQ/CLOSE_RSP, and
//! DIAL_CLS when the dialer gives up before the answer. Several agents may
//! serve a node: streams go round-robin over the ones that have not sent
//! DRAIN; draining agents are used only when no other is connected. A newer
//! stream of an agent ID that serves already waits as a standby (an agent
//! behind a load balancer dials duplicates while it looks for every
//! bridge): it takes over when the old stream ends, or replaces it after
//! 2 s open (a reconnect over a half-open old stream). An agent whose
//! stream ends takes its connections and pending dials with it, at once.
//!
//! # Flow control and half-close
//!
//! All connections through an agent share its one gRPC stream, and the
//! protocol has neither per-connection flow control nor half-close. With
//! an agent that announces the sshbridge extensions (`sshbridge agent`),
//! [`flow`] adds both: CREDIT windows per connection (the shared stream is
//! never held back) and HALF_CLOSE (TCP's FIN). With an upstream agent
//! (compatibility mode), DATA for a connection goes to that connection's
//! own buffer of [`Options::max_conn_buffer`] bytes (each chunk charged 64
//! bytes extra); while it is full the stream's reader waits for that
//! client, within the connection's stall budget ([`Options::stall_timeout`]
//! in total per [`Flow::stall_window`], charged while others wait behind
//! it), after which the connection is closed alone; a client's EOF closes
//! the connection once the target has been silent for
//! [`Flow::half_close_idle`]. Outbound, the DATA of all connections shares
//! one bounded queue per agent. The wire and every choice:
//! docs/konnectivity.md.

#![warn(missing_docs)]

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "server")]
mod conn;
#[cfg(feature = "server")]
pub mod events;
pub mod flow;
#[cfg(feature = "server")]
pub mod hub;
#[cfg(feature = "server")]
pub mod identifiers;
#[cfg(feature = "server")]
pub mod identity;
#[cfg(feature = "server")]
mod node_path;
#[cfg(feature = "server")]
mod peer;
pub mod proto;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
mod stats;
#[cfg(feature = "server")]
mod stream;

pub use flow::Extensions;
#[cfg(feature = "server")]
pub use hub::{AgentInfo, Flow, Hub, Options};
#[cfg(feature = "server")]
pub use node_path::NodePath;
#[cfg(feature = "server")]
pub use stats::Stats;
