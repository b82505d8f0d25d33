//! The controller task: it owns the state, and it is the only place that
//! changes it. Order is the point: mutate, write the store, then act.
//! What the watchers report and what a failed check does: [`outcome`].

mod outcome;
mod writes;

use std::collections::HashMap;
use std::sync::Arc;

use sshbridge_config::Route;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::workers::{self, Event};
use super::{Command, Role};
use crate::fleet::Fleet;
use crate::settings::Settings;
use crate::state::{MigrationState, NodePhase, RunPhase};
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
    /// Whether this bridge drives the rollout (always, without a role) and
    /// who does; a follower takes no step and follows the record.
    pub(super) role: Option<watch::Receiver<Role>>,
    pub(super) leading: bool,
    pub(super) leader: Option<String>,
    /// Where the watchers run (with the engine's own task), so that
    /// [`super::Controller::shutdown`] can wait for them.
    tasks: TaskTracker,
}

/// What became of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Written {
    /// It landed.
    Yes,
    /// It failed; the state in memory is still the one that was not saved.
    No,
    /// Another writer won; the state is now the record as read again.
    Superseded,
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
        (shutdown, tasks): (CancellationToken, TaskTracker),
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
            role: None,
            leading: true,
            leader: None,
            tasks,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut events = self.events_rx.take().expect("run once");
        let mut role = self.role.take();
        if let Some(r) = role.as_mut() {
            let now = r.borrow_and_update().clone();
            (self.leading, self.leader) = (now.leading, now.leader);
        }
        self.restore_routes();
        self.drive().await;
        loop {
            let following = !self.leading;
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                Some(changed) = writes::role_changed(&mut role) => self.role_changed(changed).await,
                _ = self.store.changed(), if following => self.follow().await,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => break,
                },
                Some(ev) = events.recv() => self.event(ev).await,
                _ = tokio::time::sleep(RETRY_AFTER), if self.retry => {}
            }
            self.drive().await;
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
            Some(d) => self
                .tasks
                .spawn(workers::soak(fleet, name, gen, d, s, token.clone(), tx)),
            None => self
                .tasks
                .spawn(workers::shadow(fleet, name, gen, s, token.clone(), tx)),
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
    async fn drive(&mut self) {
        if !self.leading {
            return;
        }
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
                NodePhase::Cutover => self.cut_over(&node).await,
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
        while self.state.phase == RunPhase::Running && self.step_batch().await {}
    }

    /// Start or finish the current batch; true when it moved to the next.
    async fn step_batch(&mut self) -> bool {
        let Some(run) = &self.state.run else {
            return false;
        };
        let Some(batch) = run.batches.get(run.current_batch).cloned() else {
            // Every batch is over; the rollout stops moving either way.
            self.forward(|s| {
                s.phase = RunPhase::Finished;
                Ok(())
            })
            .await;
            return false;
        };
        let fresh: Vec<_> = batch
            .iter()
            .filter(|n| !run.started.contains(*n))
            .cloned()
            .collect();
        if !fresh.is_empty() {
            let i = run.current_batch + 1;
            let ok = self
                .forward(|s| {
                    for n in &fresh {
                        s.transition(n, NodePhase::Shadow, format!("rollout batch {i}"))?;
                        s.run.as_mut().expect("run").started.insert(n.clone());
                    }
                    Ok(())
                })
                .await;
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
            && self
                .forward(|s| {
                    s.run.as_mut().expect("run").current_batch += 1;
                    Ok(())
                })
                .await
    }

    /// `cutover` is written, then the route flips, then `soak` is written
    /// and watched. A route that cannot flip is a breach.
    async fn cut_over(&mut self, node: &str) {
        if self.state.phase_of(node) == NodePhase::Shadow
            && !self
                .forward(|s| s.transition(node, NodePhase::Cutover, "shadow comparison passed"))
                .await
        {
            return;
        }
        if let Err(e) = self.fleet.set_route(node, Route::Konnectivity) {
            self.breach(node, format!("cutover failed: {e}")).await;
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
        self.forward(|s| s.transition(node, NodePhase::Soak, why))
            .await;
        self.spawn_worker(node, Some(workers::later(Instant::now(), soak)));
    }
}
