//! What the watchers report (a shadow comparison, a clean soak, a breach)
//! and what a failed check does: the node goes back to ssh, and the
//! rollout pauses or aborts, written to the store before any route moves.

use sshbridge_config::Route;
use tokio::time::Instant;

use super::{Engine, Written, RETRY_AFTER};
use crate::compare::compare;
use crate::controller::workers::{self, Event};
use crate::fleet::Fleet;
use crate::state::{NodePhase, RunPhase};
use crate::store::Store;

impl<F: Fleet, S: Store> Engine<F, S> {
    /// Roll each `(node, reason)` back, let `run` change the rollout's
    /// phase, write it all at once, then put the nodes on ssh. If the write
    /// fails nothing changes (the store and the routes keep agreeing): the
    /// nodes keep their route and their watchers, which find the breach
    /// again and retry; an operator's rollback gets the error. Returns
    /// whether it happened.
    pub(in crate::controller) async fn roll_back(
        &mut self,
        nodes: &[(String, String)],
        run: Option<(RunPhase, String)>,
    ) -> bool {
        let before = self.state.clone();
        for (n, reason) in nodes {
            if let Err(e) = self
                .state
                .transition(n, NodePhase::RolledBack, reason.as_str())
            {
                tracing::warn!(error = %e, "migration: rollback skipped");
            }
        }
        if let Some((phase, why)) = run {
            self.state.phase = phase;
            self.state.pause_reason = Some(why);
        }
        let written = self.commit().await;
        if written == Written::Superseded {
            return false;
        }
        if written == Written::No {
            self.state = before;
            if self.state.phase == RunPhase::Running {
                self.state.phase = RunPhase::Paused;
                self.state.pause_reason = Some(format!(
                    "a rollback could not be written to {}; fix it: the rollback is retried",
                    self.store.describe()
                ));
            }
            self.stop_shadows();
            return false;
        }
        for (n, _) in nodes {
            self.stop_worker(n);
        }
        for (n, reason) in nodes {
            tracing::warn!(node = %n, %reason, "migration: node rolled back to ssh");
            self.route(n, Route::Ssh);
        }
        if self.state.phase != RunPhase::Running {
            self.stop_shadows();
        }
        true
    }

    /// A node failed a check: roll it back, then pause the rollout, or
    /// abort it (every other node in a step goes back to ssh too).
    pub(super) async fn breach(&mut self, node: &str, reason: String) {
        let abort = self
            .state
            .run
            .as_ref()
            .is_some_and(|r| r.options.abort_on_failure);
        let why = format!("node {node} rolled back: {reason}");
        let mut nodes = vec![(node.to_owned(), reason)];
        let active = matches!(self.state.phase, RunPhase::Running | RunPhase::Paused);
        let run = if abort {
            let others = format!("rollout aborted: {why}");
            nodes.extend(
                self.state
                    .nodes
                    .iter()
                    .filter(|(n, r)| r.phase.in_flight() && *n != node)
                    .map(|(n, _)| (n.clone(), others.clone())),
            );
            Some((RunPhase::Aborted, why))
        } else {
            active.then(|| {
                let next = format!("{why}; inspect it, then `sshbridge migrate resume`");
                (RunPhase::Paused, next)
            })
        };
        if !self.roll_back(&nodes, run).await {
            // Unsaved: watch the node again so the breach is found and the
            // rollback retried.
            if self.state.phase_of(node).route() == Route::Konnectivity {
                self.spawn_worker(
                    node,
                    Some(workers::later(Instant::now(), self.settings().soak)),
                );
            }
        }
    }

    pub(super) async fn event(&mut self, ev: Event) {
        let (node, gen) = match &ev {
            Event::Shadow { node, gen, .. }
            | Event::SoakBreach { node, gen, .. }
            | Event::SoakClean { node, gen, .. } => (node.clone(), *gen),
        };
        if self.workers.get(&node).is_none_or(|w| w.gen != gen) {
            return;
        }
        self.workers.remove(&node);
        match ev {
            Event::Shadow {
                ssh, konnectivity, ..
            } => {
                let s = self.settings();
                let c = compare(
                    &ssh,
                    &konnectivity,
                    s.max_failure_ratio,
                    s.max_latency_ratio,
                );
                let mut c = c;
                let peers = crate::peers::judge(&node, &self.fleet.peers(&node));
                (c.passed, c.reason) = peers.fold(c.passed, &c.reason);
                let (passed, reason) = (c.passed, c.reason.clone());
                if let Some(rec) = self.state.nodes.get_mut(&node) {
                    rec.comparison = Some(c);
                }
                if !passed {
                    self.breach(&node, format!("shadow comparison failed: {reason}"))
                        .await;
                } else if self.state.phase == RunPhase::Running {
                    self.cut_over(&node).await;
                }
            }
            Event::SoakBreach { reason, .. } => self.breach(&node, reason).await,
            Event::SoakClean { summary, .. } => {
                let why = format!("soak clean: {summary}");
                let done = self
                    .forward(|s| {
                        if s.phase_of(&node) == NodePhase::Cutover {
                            // Its `soak` write had failed; record both steps.
                            s.transition(&node, NodePhase::Soak, "soak watched while unsaved")?;
                        }
                        s.transition(&node, NodePhase::Done, why)
                    })
                    .await;
                if !done {
                    // Unsaved: the node is still watched, and the step retried.
                    let soak = Some(workers::later(Instant::now(), RETRY_AFTER));
                    self.spawn_worker(&node, soak);
                }
            }
        }
    }
}
