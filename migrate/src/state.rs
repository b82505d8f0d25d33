//! The durable state of a migration: each node's phase with its history,
//! and the rollout (batches, options, run phase). This is exactly what the
//! store writes; everything else is derived from it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sshbridge_config::Route;

use crate::compare::Comparison;
use crate::settings::{ApplyOptions, Settings};

/// The version of the state file format this build writes and reads.
pub const SCHEMA: u32 = 1;

/// Where one node is in its migration (DESIGN.md "Migration").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodePhase {
    /// Not started: ssh serves.
    Ssh,
    /// Both paths probed and compared; ssh serves.
    Shadow,
    /// Konnectivity is being switched on for new streams; ssh kept warm.
    Cutover,
    /// Konnectivity serves and is watched for `soak`.
    Soak,
    /// Konnectivity serves; the node's migration is complete.
    Done,
    /// A breach or an operator sent the node back: ssh serves.
    RolledBack,
}

impl NodePhase {
    /// The path that serves the node's new streams in this phase.
    pub fn route(self) -> Route {
        match self {
            NodePhase::Cutover | NodePhase::Soak | NodePhase::Done => Route::Konnectivity,
            NodePhase::Ssh | NodePhase::Shadow | NodePhase::RolledBack => Route::Ssh,
        }
    }

    /// Whether the node is part of a step that is still running.
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            NodePhase::Shadow | NodePhase::Cutover | NodePhase::Soak
        )
    }

    /// Whether `self -> to` is a transition of the state machine.
    pub fn can_go_to(self, to: NodePhase) -> bool {
        use NodePhase::*;
        matches!(
            (self, to),
            (Ssh | RolledBack, Shadow)
                | (Shadow, Cutover)
                | (Cutover, Soak)
                | (Soak, Done)
                | (Shadow | Cutover | Soak | Done, RolledBack)
        )
    }

    /// The name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            NodePhase::Ssh => "ssh",
            NodePhase::Shadow => "shadow",
            NodePhase::Cutover => "cutover",
            NodePhase::Soak => "soak",
            NodePhase::Done => "done",
            NodePhase::RolledBack => "rolled_back",
        }
    }
}

impl fmt::Display for NodePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition the state machine does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node} cannot go from {from} to {to}")]
pub struct TransitionError {
    /// The node.
    pub node: String,
    /// Its phase.
    pub from: NodePhase,
    /// The phase asked for.
    pub to: NodePhase,
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Previous phase.
    pub from: NodePhase,
    /// New phase.
    pub to: NodePhase,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Why.
    pub reason: String,
}

/// One node's migration record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Current phase.
    pub phase: NodePhase,
    /// When it entered that phase (RFC 3339, UTC).
    pub since: String,
    /// Every transition, oldest first.
    pub history: Vec<Transition>,
    /// The latest shadow comparison.
    pub comparison: Option<Comparison>,
    /// Why the node was last rolled back.
    pub rollback_reason: Option<String>,
}

impl NodeRecord {
    /// A node that has not started: ssh serves.
    pub fn new() -> Self {
        NodeRecord {
            phase: NodePhase::Ssh,
            since: now_rfc3339(),
            history: Vec::new(),
            comparison: None,
            rollback_reason: None,
        }
    }
}

impl Default for NodeRecord {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether the rollout moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunPhase {
    /// No rollout has been applied.
    Idle,
    /// Batches are moving.
    Running,
    /// No node starts or cuts over until `resume`; soaks go on.
    Paused,
    /// Stopped after a breach or an operator's `rollback --all`.
    Aborted,
    /// Every batch has finished.
    Finished,
}

impl RunPhase {
    /// The name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Idle => "idle",
            RunPhase::Running => "running",
            RunPhase::Paused => "paused",
            RunPhase::Aborted => "aborted",
            RunPhase::Finished => "finished",
        }
    }
}

/// The rollout an `apply` started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// What the operator asked for.
    pub options: ApplyOptions,
    /// The effective settings (config plus options), kept so a restart
    /// continues with the same ones.
    pub settings: Settings,
    /// Node names per batch, in order.
    pub batches: Vec<Vec<String>>,
    /// Index of the batch in progress (== batches.len() when all finished).
    pub current_batch: usize,
    /// Nodes this rollout has started (so a node it rolled back is not
    /// retried by the same rollout).
    pub started: BTreeSet<String>,
    /// When `apply` was accepted (RFC 3339, UTC).
    pub started_at: String,
}

/// The whole persisted state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationState {
    /// File format version ([`SCHEMA`]).
    pub schema: u32,
    /// The rollout's phase.
    pub phase: RunPhase,
    /// Why the rollout is paused or aborted.
    pub pause_reason: Option<String>,
    /// The current or last rollout.
    pub run: Option<Run>,
    /// Every node a rollout has touched, by name.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// When `finalize` succeeded (RFC 3339, UTC).
    pub finalized_at: Option<String>,
}

impl Default for MigrationState {
    fn default() -> Self {
        MigrationState {
            schema: SCHEMA,
            phase: RunPhase::Idle,
            pause_reason: None,
            run: None,
            nodes: BTreeMap::new(),
            finalized_at: None,
        }
    }
}

impl MigrationState {
    /// The phase of `node` (`Ssh` for a node no rollout has touched).
    pub fn phase_of(&self, node: &str) -> NodePhase {
        self.nodes.get(node).map_or(NodePhase::Ssh, |r| r.phase)
    }

    /// Move `node` to `to`, recording when and why. An illegal transition
    /// is an error and changes nothing.
    pub fn transition(
        &mut self,
        node: &str,
        to: NodePhase,
        reason: impl Into<String>,
    ) -> Result<(), TransitionError> {
        let rec = self.nodes.entry(node.to_owned()).or_default();
        if !rec.phase.can_go_to(to) {
            return Err(TransitionError {
                node: node.to_owned(),
                from: rec.phase,
                to,
            });
        }
        let reason = reason.into();
        let at = now_rfc3339();
        rec.history.push(Transition {
            from: rec.phase,
            to,
            at: at.clone(),
            reason: reason.clone(),
        });
        rec.phase = to;
        rec.since = at;
        if to == NodePhase::RolledBack {
            rec.rollback_reason = Some(reason);
        }
        Ok(())
    }
}

/// Now, as RFC 3339 with milliseconds, UTC.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodePhase::*;

    #[test]
    fn the_happy_path_is_legal_and_recorded() {
        let mut s = MigrationState::default();
        for (to, why) in [
            (Shadow, "apply"),
            (Cutover, "passed"),
            (Soak, "routed"),
            (Done, "clean"),
        ] {
            s.transition("node-a", to, why).unwrap();
        }
        let rec = &s.nodes["node-a"];
        assert_eq!(rec.phase, Done);
        assert_eq!(rec.history.len(), 4);
        assert_eq!(rec.history[1].from, Shadow);
        assert_eq!(rec.history[1].reason, "passed");
        assert_eq!(rec.phase.route(), Route::Konnectivity);
    }

    #[test]
    fn illegal_transitions_are_errors_and_change_nothing() {
        let mut s = MigrationState::default();
        let err = s.transition("node-a", Cutover, "skip shadow").unwrap_err();
        assert_eq!((err.from, err.to), (Ssh, Cutover));
        assert_eq!(err.to_string(), "node node-a cannot go from ssh to cutover");
        assert_eq!(s.phase_of("node-a"), Ssh);
        assert!(s.nodes["node-a"].history.is_empty());
        s.transition("node-a", Shadow, "apply").unwrap();
        s.transition("node-a", RolledBack, "breach").unwrap();
        assert!(s.transition("node-a", Done, "x").is_err());
        assert!(s.transition("node-a", RolledBack, "again").is_err());
        assert_eq!(s.nodes["node-a"].rollback_reason.as_deref(), Some("breach"));
        s.transition("node-a", Shadow, "apply again").unwrap();
    }

    #[test]
    fn every_phase_routes_as_designed() {
        let all = [Ssh, Shadow, Cutover, Soak, Done, RolledBack];
        let k: Vec<_> = all
            .iter()
            .filter(|p| p.route() == Route::Konnectivity)
            .collect();
        assert_eq!(k, [&Cutover, &Soak, &Done]);
        for p in all {
            assert_eq!(p.can_go_to(RolledBack), p != Ssh && p != RolledBack);
        }
    }
}
