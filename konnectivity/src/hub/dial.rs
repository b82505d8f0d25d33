//! A dial through one of a node's agents: the agent is picked round-robin
//! (not draining ones first), DIAL_REQ goes out, and DIAL_RSP becomes a
//! stream or the [`DialError`] the egress answers with. A dial dropped
//! before its answer sends DIAL_CLS.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sshbridge_core::path::{BoxStream, DialError};
use tokio::sync::oneshot;

use super::{Hub, NodeEntry};
use crate::peer::{lock, Agent, DialAnswer, PendingDial};
use crate::proto::Packet;
use crate::stats::NodeStats;
use crate::stream::KonnStream;

impl Hub {
    /// Dials `host:port` from one of `node`'s agents: not draining ones
    /// first, round-robin per stream.
    pub async fn dial(&self, node: &str, host: &str, port: u16) -> Result<BoxStream, DialError> {
        let target = sshbridge_core::HostPort::new(host, port).to_string();
        let (agent, stats) = self.pick(node)?;
        if !agent.has_room() {
            stats
                .dials_over_connection_cap
                .fetch_add(1, Ordering::Relaxed);
            return Err(DialError::Unavailable {
                node: node.into(),
                path: sshbridge_core::PathKind::Konnectivity,
                reason: format!(
                    "agent {} has {} connections open, the limit ([konnectivity] max_connections_per_agent); \
                     close some streams or raise the limit",
                    agent.id, self.inner.flow.max_connections_per_agent
                ),
            });
        }
        let random = loop {
            let r: i64 = rand::random();
            if r != 0 && !lock(&agent.pending).contains_key(&r) {
                break r;
            }
        };
        let (answer, rx) = oneshot::channel();
        let pending = PendingDial {
            answer,
            stats: stats.clone(),
        };
        lock(&agent.pending).insert(random, pending);
        let mut abandon = Abandon {
            agent: &agent,
            random,
            stats: &stats,
            armed: true,
        };
        let request = Packet::dial_request(target.clone(), random);
        let answer = tokio::select! {
            _ = agent.ended.cancelled() => None,
            answer = async {
                agent.data_tx.send(request).await.ok()?;
                rx.await.ok()
            } => answer,
        };
        abandon.armed = false;
        let failed = |counter: &AtomicU64| {
            counter.fetch_add(1, Ordering::Relaxed);
        };
        match answer {
            Some(DialAnswer::Connected(opened)) => {
                stats.dials_ok.fetch_add(1, Ordering::Relaxed);
                Ok(Box::new(KonnStream::new(opened)))
            }
            Some(DialAnswer::Failed(reason)) if is_timeout(&reason) => {
                failed(&stats.dials_timeout);
                Err(DialError::Timeout {
                    node: node.into(),
                    target,
                    after: self.inner.options.dial_timeout,
                })
            }
            Some(DialAnswer::Failed(reason)) => {
                failed(&stats.dials_refused);
                Err(DialError::Refused {
                    node: node.into(),
                    target,
                    reason: format!("Konnectivity agent {}: {reason}", agent.id),
                })
            }
            None => {
                lock(&agent.pending).remove(&random);
                failed(&stats.dials_unavailable);
                Err(DialError::Unavailable {
                    node: node.into(),
                    path: sshbridge_core::PathKind::Konnectivity,
                    reason: format!(
                        "agent {} disconnected before answering the dial of {target}; retry, and check the agent's logs",
                        agent.id
                    ),
                })
            }
        }
    }

    pub(super) fn pick(&self, node: &str) -> Result<(Arc<Agent>, Arc<NodeStats>), DialError> {
        let mut state = lock(&self.inner.state);
        let known = state.nodes.iter().any(|n| n.name == node);
        let entry = state
            .per_node
            .entry(node.to_string())
            .or_insert_with(NodeEntry::new);
        let ready: Vec<&Arc<Agent>> = entry.agents.iter().filter(|a| !a.is_draining()).collect();
        let candidates = if ready.is_empty() {
            entry.agents.iter().collect()
        } else {
            ready
        };
        if candidates.is_empty() {
            entry
                .stats
                .dials_unavailable
                .fetch_add(1, Ordering::Relaxed);
            let reason = if known {
                format!("no Konnectivity agent is connected for it; start the agent on {node} with --identifiers host={node} (or its ipv4= address)")
            } else {
                "it is not a configured node".to_string()
            };
            return Err(DialError::Unavailable {
                node: node.into(),
                path: sshbridge_core::PathKind::Konnectivity,
                reason,
            });
        }
        let agent = candidates[entry.next % candidates.len()].clone();
        entry.next = entry.next.wrapping_add(1);
        Ok((agent, entry.stats.clone()))
    }
}

/// Sends DIAL_CLS when a dial is dropped before its answer.
struct Abandon<'a> {
    agent: &'a Arc<Agent>,
    random: i64,
    stats: &'a NodeStats,
    armed: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if self.armed && lock(&self.agent.pending).remove(&self.random).is_some() {
            self.stats.dials_abandoned.fetch_add(1, Ordering::Relaxed);
            self.agent.control(Packet::close_dial(self.random));
        }
    }
}

/// Whether an agent's dial error says it timed out (Go's `i/o timeout`,
/// `context deadline exceeded`, or our own agent's wording).
pub(super) fn is_timeout(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("timeout") || r.contains("timed out") || r.contains("deadline exceeded")
}
