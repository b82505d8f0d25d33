//! The status snapshot: what `migrate status` prints and `/migration`
//! serves.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sshbridge_config::Route;
use tokio::time::Instant;

use super::engine::Engine;
use crate::compare::Comparison;
use crate::fleet::Fleet;
use crate::state::{NodePhase, RunPhase, Transition};
use crate::store::Store;

/// One node in the status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Its phase.
    pub phase: NodePhase,
    /// The path serving its new streams.
    pub route: Route,
    /// When it entered the phase (RFC 3339, UTC).
    pub since: String,
    /// Time in the phase, e.g. "1m 12s".
    pub in_phase: String,
    /// What the node waits for, e.g. "soak: 1m 12s left".
    pub waiting_for: Option<String>,
    /// The latest shadow comparison.
    pub comparison: Option<Comparison>,
    /// Why it was last rolled back.
    pub rollback_reason: Option<String>,
    /// Every transition, oldest first.
    pub history: Vec<Transition>,
}

/// The rollout at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// idle / running / paused / aborted / finished.
    pub phase: RunPhase,
    /// Why it is paused or aborted.
    pub reason: Option<String>,
    /// Whether a breach aborts rather than pauses.
    pub abort_on_failure: bool,
    /// The batch in progress, counted from 1.
    pub current_batch: Option<usize>,
    /// Node names per batch.
    pub batches: Vec<Vec<String>>,
    /// When the rollout was applied (RFC 3339, UTC).
    pub started_at: Option<String>,
    /// Time since then, e.g. "3m 2s".
    pub elapsed: Option<String>,
    /// Everything the rollout waits for, one line each.
    pub waiting_for: Vec<String>,
    /// Every node the migration has touched.
    pub nodes: Vec<NodeStatus>,
    /// Nodes now rolled back (the CLI exits 3 when this is not empty).
    pub rolled_back: Vec<String>,
    /// The last store or route error, if any.
    pub last_error: Option<String>,
    /// When `finalize` succeeded.
    pub finalized_at: Option<String>,
}

impl Status {
    /// Whether any node rolled back: the CLI's exit 3.
    pub fn regressed(&self) -> bool {
        !self.rolled_back.is_empty()
    }
}

/// Whole seconds, rounded up, as "1m 12s".
fn human(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn age(rfc3339: &str) -> Option<String> {
    let t = humantime::parse_rfc3339(rfc3339).ok()?;
    Some(human(
        SystemTime::now().duration_since(t).unwrap_or_default(),
    ))
}

impl<F: Fleet, S: Store> Engine<F, S> {
    pub(super) fn status(&self) -> Status {
        let s = self.settings();
        let now = Instant::now();
        let mut waiting_for = Vec::new();
        let nodes: Vec<NodeStatus> = self
            .state
            .nodes
            .iter()
            .map(|(name, rec)| {
                let wait = self.workers.get(name).map(|w| match w.deadline {
                    Some(d) => format!("soak: {} left", human(d.saturating_duration_since(now))),
                    None => format!(
                        "shadow: {} probes per path, about {} left",
                        s.shadow_probes,
                        human(
                            (s.probe_interval
                                .saturating_mul(s.shadow_probes.saturating_sub(1)))
                            .saturating_sub(now - w.started)
                        )
                    ),
                });
                let wait = wait.or_else(|| {
                    (rec.phase == NodePhase::Shadow && self.state.phase == RunPhase::Paused)
                        .then(|| "shadow: held while the rollout is paused".to_owned())
                });
                if let Some(w) = &wait {
                    waiting_for.push(format!("{name}: {w}"));
                }
                NodeStatus {
                    name: name.clone(),
                    phase: rec.phase,
                    route: rec.phase.route(),
                    since: rec.since.clone(),
                    in_phase: age(&rec.since).unwrap_or_default(),
                    waiting_for: wait,
                    comparison: rec.comparison.clone(),
                    rollback_reason: rec.rollback_reason.clone(),
                    history: rec.history.clone(),
                }
            })
            .collect();
        if self.state.phase == RunPhase::Paused {
            waiting_for.push(format!(
                "operator: {}",
                self.state.pause_reason.as_deref().unwrap_or("paused")
            ));
        }
        let run = self.state.run.as_ref();
        Status {
            phase: self.state.phase,
            reason: self.state.pause_reason.clone(),
            abort_on_failure: run.is_some_and(|r| r.options.abort_on_failure),
            current_batch: run
                .filter(|r| r.current_batch < r.batches.len())
                .map(|r| r.current_batch + 1),
            batches: run.map(|r| r.batches.clone()).unwrap_or_default(),
            started_at: run.map(|r| r.started_at.clone()),
            elapsed: run.and_then(|r| age(&r.started_at)),
            waiting_for,
            rolled_back: nodes
                .iter()
                .filter(|n| n.phase == NodePhase::RolledBack)
                .map(|n| n.name.clone())
                .collect(),
            nodes,
            last_error: self.last_error.clone(),
            finalized_at: self.state.finalized_at.clone(),
        }
    }
}
