//! The controller task: it owns the state, and it is the only place that
//! changes it. Order is the point: mutate, write the store, then act.

use std::collections::HashMap;
use std::sync::Arc;

use sshbridge_config::Route;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::workers::{self, Event};
use super::Command;
use crate::compare::compare;
use crate::fleet::Fleet;
use crate::settings::Settings;
use crate::state::{MigrationState, NodePhase, RunPhase, TransitionError};
use crate::store::Store;

/// A running watcher of one node. Dropping it does not stop the watcher;
/// cancelling `token` does.
pub(super) struct Worker {
    pub(super) gen: u64,
    pub(super) token: CancellationToken,
    pub(super) started: Instant,
    /// End of the soak, for soak watchers.
    pub(super) deadline: Option<Instant>,
}

pub(super) struct Engine<F: Fleet, S: Store> {
    pub(super) fleet: Arc<F>,
    pub(super) store: S,
    pub(super) base: Settings,
    pub(super) state: MigrationState,
    pub(super) workers: HashMap<String, Worker>,
    next_gen: u64,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: Option<mpsc::UnboundedReceiver<Event>>,
    /// The last store or route error, shown in status until the next success.
    pub(super) last_error: Option<String>,
    /// Set when a write failed and its step was undone: the engine retries
    /// its steps every [`RETRY_AFTER`] until a write lands again.
    retry: bool,
    shutdown: CancellationToken,
}

/// How often steps are retried after a failed write.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Attempts per write before its step is undone: a second attempt rides
/// out a transient error (a signal, a full disk freed by rotation).
const WRITE_ATTEMPTS: usize = 2;

impl<F: Fleet, S: Store> Engine<F, S> {
    pub(super) fn new(
        fleet: Arc<F>,
        store: S,
        base: Settings,
        state: MigrationState,
        shutdown: CancellationToken,
    ) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Engine {
            fleet,
            store,
            base,
            state,
            workers: HashMap::new(),
            next_gen: 0,
            events_tx,
            events_rx: Some(events_rx),
            last_error: None,
            retry: false,
            shutdown,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut events = self.events_rx.take().expect("run once");
        self.restore_routes();
        self.drive();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                Some(ev) = events.recv() => self.event(ev),
                _ = tokio::time::sleep(RETRY_AFTER), if self.retry => {}
            }
            self.drive();
        }
        for w in self.workers.values() {
            w.token.cancel();
        }
    }

    /// The settings of the current rollout (or the config's).
    pub(super) fn settings(&self) -> Settings {
        self.state
            .run
            .as_ref()
            .map_or_else(|| self.base.clone(), |r| r.settings.clone())
    }

    fn route(&mut self, node: &str, route: Route) {
        if let Err(e) = self.fleet.set_route(node, route) {
            tracing::error!(%node, %route, error = %e, "migration: route change failed");
            self.last_error = Some(e.to_string());
        }
    }

    /// Write the state, trying [`WRITE_ATTEMPTS`] times. On failure the
    /// error is kept for status and the engine retries its steps until a
    /// write lands.
    fn commit(&mut self) -> bool {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.store.save(&self.state) {
                Ok(()) => {
                    self.retry = false;
                    return true;
                }
                Err(e) if attempt < WRITE_ATTEMPTS => {
                    tracing::warn!(error = %e, "migration: state not saved; trying again");
                }
                Err(e) => {
                    tracing::error!(error = %e, "migration: state not saved; the step is undone");
                    self.last_error = Some(e.to_string());
                    self.retry = true;
                    return false;
                }
            }
        }
    }

    /// Apply `change` and write it; if either fails, the in-memory state is
    /// restored and the rollout is held (unsaved), so nothing moves forward
    /// that was not recorded first.
    pub(super) fn forward(
        &mut self,
        change: impl FnOnce(&mut MigrationState) -> Result<(), TransitionError>,
    ) -> bool {
        let before = self.state.clone();
        if let Err(e) = change(&mut self.state) {
            tracing::error!(error = %e, "migration: refused transition");
            self.last_error = Some(e.to_string());
            return false;
        }
        if self.commit() {
            return true;
        }
        self.state = before;
        if self.state.phase == RunPhase::Running {
            self.state.phase = RunPhase::Paused;
            self.state.pause_reason = Some(format!(
                "cannot write the migration state to {}; fix it, then run `sshbridge migrate resume`",
                self.store.describe()
            ));
        }
        self.stop_shadows();
        false
    }

    /// After a (re)start: every node the state knows goes on the path its
    /// phase allows; nothing is served over a path the node had not reached.
    fn restore_routes(&mut self) {
        let routes: Vec<_> = self
            .state
            .nodes
            .iter()
            .map(|(n, r)| (n.clone(), r.phase.route()))
            .collect();
        for (node, route) in routes {
            self.route(&node, route);
        }
    }

    fn spawn_worker(&mut self, node: &str, deadline: Option<Instant>) {
        self.next_gen += 1;
        let gen = self.next_gen;
        let token = self.shutdown.child_token();
        let (fleet, s, tx, name) = (
            self.fleet.clone(),
            self.settings(),
            self.events_tx.clone(),
            node.to_owned(),
        );
        match deadline {
            Some(d) => tokio::spawn(workers::soak(fleet, name, gen, d, s, token.clone(), tx)),
            None => tokio::spawn(workers::shadow(fleet, name, gen, s, token.clone(), tx)),
        };
        let started = Instant::now();
        let w = Worker {
            gen,
            token,
            started,
            deadline,
        };
        if let Some(old) = self.workers.insert(node.to_owned(), w) {
            old.token.cancel();
        }
    }

    fn stop_worker(&mut self, node: &str) {
        if let Some(w) = self.workers.remove(node) {
            w.token.cancel();
        }
    }

    pub(super) fn stop_shadows(&mut self) {
        let shadows: Vec<_> = self
            .workers
            .iter()
            .filter(|(_, w)| w.deadline.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for n in shadows {
            self.stop_worker(&n);
        }
    }

    /// Do whatever the state allows next: finish cutovers, (re)start
    /// watchers, start the next nodes and batches.
    fn drive(&mut self) {
        let nodes: Vec<_> = self
            .state
            .nodes
            .iter()
            .map(|(n, r)| (n.clone(), r.phase))
            .collect();
        for (node, phase) in nodes {
            if self.workers.contains_key(&node) {
                continue;
            }
            match phase {
                NodePhase::Cutover => self.cut_over(&node),
                NodePhase::Soak => {
                    let deadline = workers::later(Instant::now(), self.settings().soak);
                    self.spawn_worker(&node, Some(deadline));
                }
                NodePhase::Shadow if self.state.phase == RunPhase::Running => {
                    self.spawn_worker(&node, None)
                }
                _ => {}
            }
        }
        while self.state.phase == RunPhase::Running && self.step_batch() {}
    }

    /// Start or finish the current batch; true when it moved to the next.
    fn step_batch(&mut self) -> bool {
        let Some(run) = &self.state.run else {
            return false;
        };
        let Some(batch) = run.batches.get(run.current_batch).cloned() else {
            // Every batch is over; the rollout stops moving either way.
            self.forward(|s| {
                s.phase = RunPhase::Finished;
                Ok(())
            });
            return false;
        };
        let fresh: Vec<_> = batch
            .iter()
            .filter(|n| !run.started.contains(*n))
            .cloned()
            .collect();
        if !fresh.is_empty() {
            let i = run.current_batch + 1;
            let ok = self.forward(|s| {
                for n in &fresh {
                    s.transition(n, NodePhase::Shadow, format!("rollout batch {i}"))?;
                    s.run.as_mut().expect("run").started.insert(n.clone());
                }
                Ok(())
            });
            if ok {
                for n in &fresh {
                    self.spawn_worker(n, None);
                }
            }
            return false;
        }
        let finished = batch.iter().all(|n| {
            matches!(
                self.state.phase_of(n),
                NodePhase::Done | NodePhase::RolledBack
            )
        });
        finished
            && self.forward(|s| {
                s.run.as_mut().expect("run").current_batch += 1;
                Ok(())
            })
    }

    /// `cutover` is written, then the route flips, then `soak` is written
    /// and watched. A route that cannot flip is a breach.
    fn cut_over(&mut self, node: &str) {
        if self.state.phase_of(node) == NodePhase::Shadow
            && !self.forward(|s| s.transition(node, NodePhase::Cutover, "shadow comparison passed"))
        {
            return;
        }
        if let Err(e) = self.fleet.set_route(node, Route::Konnectivity) {
            self.breach(node, format!("cutover failed: {e}"));
            return;
        }
        let soak = self.settings().soak;
        let why = format!(
            "new streams go over konnectivity; watching for {}",
            humantime::format_duration(soak)
        );
        // Watched either way: a node serving over konnectivity is never
        // left alone. Unsaved, it stays `cutover` (on konnectivity, as the
        // store says) and a clean soak records both steps at once.
        self.forward(|s| s.transition(node, NodePhase::Soak, why));
        self.spawn_worker(node, Some(workers::later(Instant::now(), soak)));
    }

    /// Roll each `(node, reason)` back, let `run` change the rollout's
    /// phase, write it all at once, then put the nodes on ssh. If the write
    /// fails nothing changes (the store and the routes keep agreeing): the
    /// nodes keep their route and their watchers, which find the breach
    /// again and retry; an operator's rollback gets the error. Returns
    /// whether it happened.
    pub(super) fn roll_back(
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
        if !self.commit() {
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
    fn breach(&mut self, node: &str, reason: String) {
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
        if !self.roll_back(&nodes, run) {
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

    fn event(&mut self, ev: Event) {
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
                let (passed, reason) = (c.passed, c.reason.clone());
                if let Some(rec) = self.state.nodes.get_mut(&node) {
                    rec.comparison = Some(c);
                }
                if !passed {
                    self.breach(&node, format!("shadow comparison failed: {reason}"));
                } else if self.state.phase == RunPhase::Running {
                    self.cut_over(&node);
                }
            }
            Event::SoakBreach { reason, .. } => self.breach(&node, reason),
            Event::SoakClean { summary, .. } => {
                let why = format!("soak clean: {summary}");
                let done = self.forward(|s| {
                    if s.phase_of(&node) == NodePhase::Cutover {
                        // Its `soak` write had failed; record both steps.
                        s.transition(&node, NodePhase::Soak, "soak watched while unsaved")?;
                    }
                    s.transition(&node, NodePhase::Done, why)
                });
                if !done {
                    // Unsaved: the node is still watched, and the step retried.
                    let soak = Some(workers::later(Instant::now(), RETRY_AFTER));
                    self.spawn_worker(&node, soak);
                }
            }
        }
    }
}
