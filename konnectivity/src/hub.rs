//! The agents connected to this bridge, which node each serves, and dials
//! through them (the dial itself: [`dial`]).

mod dial;
mod standby;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sshbridge_config::Node;
use tokio::sync::watch;

use super::events::{HubEvents, NodeEvents};
use super::flow::Extensions;
pub use super::flow::Flow;
use super::identifiers::Identifiers;
use super::identity::{Guard, Refusal};
use super::peer::{lock, Agent, Limits, Registered};
use super::stats::{LimitHits, NodeStats, Stats};
pub use standby::STANDBY_SETTLE;

/// Settings of the agent server.
#[derive(Debug, Clone)]
pub struct Options {
    /// `serverID` announced to agents (`[bridge].id`).
    pub server_id: String,
    /// `serverCount` announced to agents (`[konnectivity].server_count`).
    pub server_count: u32,
    /// Most bytes received and not yet read that one connection may hold;
    /// past it the agent's stream waits for that reader.
    pub max_conn_buffer: usize,
    /// How long a full connection may take no bytes before it is closed
    /// (meanwhile the agent's stream waits for it).
    pub stall_timeout: Duration,
    /// Reported as the timeout when an agent says its dial timed out
    /// (`[egress].dial_timeout`).
    pub dial_timeout: Duration,
    /// How agents prove which node they serve (`[konnectivity].identity`).
    pub identity: Guard,
}

impl Options {
    /// Default per-connection buffer: 4 MiB.
    pub const DEFAULT_MAX_CONN_BUFFER: usize = 4 * 1024 * 1024;
    /// Default stall timeout: 30 s.
    pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
}

/// One agent as shown in reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentInfo {
    /// `agentID`.
    pub id: String,
    /// `agentIdentifiers`, normalized.
    pub identifiers: String,
    /// The agent sent DRAIN: used only when no other agent of the node is.
    pub draining: bool,
    /// When its current stream was accepted.
    pub connected_since: SystemTime,
    /// Connections open through it (all nodes it serves).
    pub open_connections: usize,
    /// `credit` when both ends speak the credit extension, else
    /// `compatibility` (docs/konnectivity.md).
    pub flow_control: &'static str,
    /// Extensions in use with it, comma-separated (empty for none).
    pub extensions: String,
}

/// The registry of connected agents and the Konnectivity path of every
/// node. Cheap to clone; all clones share the registry.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    options: Options,
    flow: Flow,
    hits: Arc<LimitHits>,
    serial: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    nodes: Vec<Node>,
    agents: HashMap<String, Arc<Agent>>,
    /// The node each agent ID's credential proves (`None`: unproven, it
    /// serves what its identifiers name). Set and removed with `agents`.
    owners: HashMap<String, Option<String>>,
    per_node: HashMap<String, NodeEntry>,
    /// Newer streams of an agent ID that serves already, oldest first
    /// ([`standby`]).
    standby: HashMap<String, Vec<Arc<Agent>>>,
}

struct NodeEntry {
    /// The node's agents, by ID.
    agents: Vec<Arc<Agent>>,
    /// Round-robin position, so streams spread over the agents.
    next: usize,
    /// Connected, non-draining agents. Dropping the sender would end
    /// every subscriber's watch, so entries are never removed.
    live: watch::Sender<usize>,
    stats: Arc<NodeStats>,
}

impl NodeEntry {
    fn new() -> NodeEntry {
        NodeEntry {
            agents: Vec::new(),
            next: 0,
            live: watch::Sender::new(0),
            stats: Arc::default(),
        }
    }
}

impl Hub {
    /// A registry for `nodes`, with no agent yet, and the default [`Flow`].
    pub fn new(options: Options, nodes: &[Node]) -> Hub {
        Hub::with_flow(options, Flow::default(), nodes)
    }

    /// A registry for `nodes` with flow settings `flow`.
    pub fn with_flow(options: Options, flow: Flow, nodes: &[Node]) -> Hub {
        let hub = Hub {
            inner: Arc::new(Inner {
                options,
                flow,
                hits: Arc::default(),
                serial: AtomicU64::new(0),
                state: Mutex::default(),
            }),
        };
        hub.set_nodes(nodes);
        hub
    }

    /// The settings it was made with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// The flow settings it was made with.
    pub fn flow(&self) -> &Flow {
        &self.inner.flow
    }

    /// Agents disconnected because they stopped reading their stream
    /// (their control queue passed `max_queued_control`).
    pub fn agents_cut_for_control_backlog(&self) -> u64 {
        self.inner.hits.control_backlog.load(Ordering::Relaxed)
    }

    /// Publishes the hub's own events (agents cut for a control backlog)
    /// to `events` from now on.
    pub fn set_events(&self, events: Arc<dyn HubEvents>) {
        *lock(&self.inner.hits.events) = Some(events);
    }

    /// Publishes `node`'s limit hits to `events` from now on (replacing
    /// the node's previous hook).
    pub fn set_node_events(&self, node: &str, events: Arc<dyn NodeEvents>) {
        let mut state = lock(&self.inner.state);
        let entry = state
            .per_node
            .entry(node.to_string())
            .or_insert_with(NodeEntry::new);
        *lock(&entry.stats.events) = Some(events);
    }

    /// Replaces the node list (on reload) and maps the connected agents
    /// to the new nodes.
    pub fn set_nodes(&self, nodes: &[Node]) {
        let mut state = lock(&self.inner.state);
        state.nodes = nodes.to_vec();
        refresh(&mut state);
    }

    /// The agents serving `node`, by ID.
    pub fn agents(&self, node: &str) -> Vec<AgentInfo> {
        let state = lock(&self.inner.state);
        let Some(entry) = state.per_node.get(node) else {
            return Vec::new();
        };
        entry
            .agents
            .iter()
            .map(|a| AgentInfo {
                id: a.id.clone(),
                identifiers: a.identifiers.to_string(),
                draining: a.is_draining(),
                connected_since: a.since,
                open_connections: a.open_connections(),
                flow_control: a.ext.mode(),
                extensions: a.ext.header(),
            })
            .collect()
    }

    /// The flow-control mode of `node`'s agents: `credit`,
    /// `compatibility` or `mixed`; `None` without agents.
    pub fn flow_control(&self, node: &str) -> Option<&'static str> {
        let agents = self.agents(node);
        let first = agents.first()?.flow_control;
        Some(if agents.iter().all(|a| a.flow_control == first) {
            first
        } else {
            "mixed"
        })
    }

    /// The number of connected, non-draining agents of `node`, updated as
    /// agents come, drain and go.
    pub fn subscribe(&self, node: &str) -> watch::Receiver<usize> {
        let mut state = lock(&self.inner.state);
        let entry = state
            .per_node
            .entry(node.to_string())
            .or_insert_with(NodeEntry::new);
        entry.live.subscribe()
    }

    /// The Konnectivity path's counters of `node` (zero when unknown).
    pub fn stats(&self, node: &str) -> Stats {
        let state = lock(&self.inner.state);
        state
            .per_node
            .get(node)
            .map(|e| e.stats.snapshot())
            .unwrap_or_default()
    }

    /// Ends every agent stream (shutdown): their connections end with an error.
    pub fn close_all(&self) {
        let agents: Vec<_> = {
            let mut state = lock(&self.inner.state);
            state.owners.clear();
            let mut all = standby::take_all(&mut state);
            all.extend(state.agents.drain().map(|(_, a)| a));
            all
        };
        for agent in agents {
            agent.end("the bridge is shutting down");
        }
        refresh(&mut lock(&self.inner.state));
    }

    /// Registers a new agent stream that announced no extension
    /// (compatibility mode) for `owner`; see [`Hub::register_with`].
    #[cfg(test)]
    pub(crate) fn register(
        &self,
        id: String,
        identifiers: Identifiers,
        owner: Option<String>,
    ) -> Result<Registered, Refusal> {
        self.register_with(id, identifiers, owner, (Extensions::NONE, None))
    }

    /// Registers a new agent stream for `owner`, the node its credential
    /// proves (`None` when identity is claimed), that announced `announced`
    /// (and, with `credit`, the receive window `peer_window`). A stream of
    /// an ID that serves already (same owner) waits as a standby
    /// ([`standby`]); one of another owner keeps its ID and the newcomer is
    /// refused.
    pub(crate) fn register_with(
        &self,
        id: String,
        identifiers: Identifiers,
        owner: Option<String>,
        (announced, peer_window): (Extensions, Option<usize>),
    ) -> Result<Registered, Refusal> {
        let serial = self.inner.serial.fetch_add(1, Ordering::Relaxed);
        let (o, f) = (&self.inner.options, &self.inner.flow);
        let mut ext = f.extensions.both(announced);
        if peer_window.is_none() {
            // Credit without a window to start from is not credit.
            ext.credit = false;
        }
        let limits = Limits {
            max_conn_buffer: o.max_conn_buffer,
            stall_timeout: o.stall_timeout,
            stall_window: f.stall_window,
            window: f.credit_window,
            peer_window: peer_window.unwrap_or(0),
            max_connections: f.max_connections_per_agent,
            max_queued_control: f.max_queued_control,
            half_close_idle: f.half_close_idle,
        };
        let registered = {
            let mut state = lock(&self.inner.state);
            if let Some(holder) = state.owners.get(&id).filter(|h| **h != owner) {
                return Err(Refusal::AgentIdTaken {
                    id,
                    holder: holder.clone().unwrap_or_else(|| "an unproven agent".into()),
                });
            }
            let (agent, data_rx, control_rx) = Agent::new(
                id,
                identifiers,
                serial,
                (ext, limits, self.inner.hits.clone()),
            );
            state.owners.insert(agent.id.clone(), owner);
            standby::admit(&mut state, agent.clone());
            refresh(&mut state);
            Registered {
                agent,
                data_rx,
                control_rx,
            }
        };
        Ok(registered)
    }

    /// The configured nodes, as agents are checked against them.
    pub(crate) fn nodes(&self) -> Vec<Node> {
        lock(&self.inner.state).nodes.clone()
    }

    /// Removes `agent`'s stream (serving or standby); a standby of its ID
    /// serves next.
    pub(crate) fn unregister(&self, agent: &Arc<Agent>) {
        let mut state = lock(&self.inner.state);
        standby::remove(&mut state, agent);
        refresh(&mut state);
    }

    /// Recomputes liveness after an agent's DRAIN.
    pub(crate) fn refresh(&self) {
        refresh(&mut lock(&self.inner.state));
    }
}

/// Maps agents to nodes again and publishes each node's live count.
fn refresh(state: &mut State) {
    let State {
        nodes,
        agents,
        owners,
        per_node,
        ..
    } = state;
    for node in nodes.iter() {
        per_node
            .entry(node.name.clone())
            .or_insert_with(NodeEntry::new);
    }
    for (name, entry) in per_node.iter_mut() {
        let node = nodes.iter().find(|n| &n.name == name);
        let mut serving: Vec<Arc<Agent>> = match node {
            Some(node) => agents
                .values()
                .filter(|a| match owners.get(&a.id) {
                    // A proven agent serves its own node, whatever else
                    // matches its (checked) identifiers after a reload.
                    Some(Some(owner)) => owner.eq_ignore_ascii_case(&node.name),
                    _ => a.identifiers.matches(node),
                })
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        serving.sort_by(|a, b| a.id.cmp(&b.id));
        let live = serving.iter().filter(|a| !a.is_draining()).count();
        entry.agents = serving;
        entry
            .live
            .send_if_modified(|v| std::mem::replace(v, live) != live);
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
