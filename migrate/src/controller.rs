//! The migration controller: one task that owns the state, takes commands
//! from the daemon's admin API, runs each node through its steps and writes
//! every transition to the store before it takes effect.

mod commands;
mod engine;
mod status;
mod workers;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::fleet::Fleet;
use crate::plan::Plan;
use crate::settings::{ApplyOptions, Settings};
use crate::state::{MigrationState, NodePhase, RunPhase};
use crate::store::{Store, StoreError};

pub use status::{NodeStatus, Status};

/// Which nodes `rollback` sends back to ssh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RollbackTarget {
    /// `rollback --all`: every node, and the rollout is aborted.
    All,
    /// `rollback NODE...`: these nodes; a running rollout is paused.
    Nodes(Vec<String>),
}

/// What `finalize` hands back: the end state, for the EgressSelectorConfiguration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalState {
    /// Every node, all served by konnectivity.
    pub nodes: Vec<String>,
    /// When finalize was recorded (RFC 3339, UTC).
    pub finalized_at: String,
}

/// Who drives a shared migration, as the leader election says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Role {
    /// Whether this bridge leads (and so steps the rollout).
    pub leading: bool,
    /// The leader's identity, when known.
    pub leader: Option<String>,
}

/// Why a command was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The state store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The controller task has ended (daemon shutting down).
    #[error("the migration controller has stopped; is the daemon shutting down?")]
    Stopped,
    /// `apply` while a rollout runs.
    #[error("a rollout is already {}; pause it, or wait for it to finish", .0.as_str())]
    Busy(RunPhase),
    /// `apply` while a node of a paused rollout is in shadow.
    #[error("node {node} is in {phase} from the paused rollout; run `sshbridge migrate resume` or roll it back first")]
    NodeInFlight {
        /// The node.
        node: String,
        /// Its phase.
        phase: NodePhase,
    },
    /// `apply` found no node to move.
    #[error("no node is ready to migrate:\n{0}")]
    NothingReady(Box<Plan>),
    /// `pause`/`resume` in a phase where it means nothing.
    #[error("the rollout is {}; {what} applies only to a {} rollout", .phase.as_str(), .needs.as_str())]
    WrongPhase {
        /// The current phase.
        phase: RunPhase,
        /// The command.
        what: &'static str,
        /// The phase it needs.
        needs: RunPhase,
    },
    /// `rollback` of a node the bridge does not know.
    #[error("no node named {0} in the bridge's config or the migration state")]
    UnknownNode(String),
    /// A command that changes the rollout, sent to a follower.
    #[error("this bridge does not drive the migration; {}", .0.as_ref().map_or_else(|| "no bridge leads right now: try again in a few seconds".to_owned(), |l| format!("send it to the leader, bridge {l}")))]
    NotLeader(Option<String>),
    /// `finalize` before every node is done.
    #[error("finalize needs every node done; not yet: {}", .0.iter().map(|(n, p)| format!("{n} ({p})")).collect::<Vec<_>>().join(", "))]
    NotDone(Vec<(String, NodePhase)>),
}

type Reply<T> = oneshot::Sender<Result<T, ControllerError>>;

/// A request to the controller task.
pub(crate) enum Command {
    Plan(ApplyOptions, Reply<Plan>),
    Apply(ApplyOptions, Reply<Plan>),
    Pause(Reply<()>),
    Resume(Reply<()>),
    Rollback(RollbackTarget, Reply<Vec<String>>),
    Finalize(Reply<FinalState>),
    Status(Reply<Status>),
}

/// The handle to the controller task. Dropping every handle (or cancelling
/// the shutdown token) stops the task and its watchers; the state on disk
/// stays as last written and the next start resumes from it.
/// [`Controller::shutdown`] stops them and waits until they have ended.
pub struct Controller {
    /// Commands to the task; dropping it ends the task.
    tx: mpsc::Sender<Command>,
    /// The controller task and its watchers (one per node in a step).
    tasks: TaskTracker,
    /// A child of the shutdown token: cancelling it stops the task, which
    /// cancels its watchers' children of it.
    stop: CancellationToken,
}

impl Controller {
    /// Load the saved state from `store`, put every node it knows back on
    /// the path its phase allows (`cutover`/`soak`/`done` on konnectivity,
    /// every other phase on ssh), and start the task. A running rollout
    /// resumes: shadows and soaks restart from their beginning.
    ///
    /// Fails, writing nothing, when the store cannot be read. Must be called
    /// inside a tokio runtime.
    pub async fn start<F: Fleet, S: Store>(
        fleet: Arc<F>,
        mut store: S,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Result<Controller, ControllerError> {
        let state = store.load().await?.unwrap_or_default();
        Ok(Controller::start_with(
            fleet, store, state, settings, shutdown,
        ))
    }

    /// [`Controller::start`] with the state already loaded from `store`
    /// (for callers that cannot await, e.g. with [`crate::FileStore::read`]).
    pub fn start_with<F: Fleet, S: Store>(
        fleet: Arc<F>,
        store: S,
        state: MigrationState,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Controller {
        let (tx, rx) = mpsc::channel(16);
        let (tasks, stop) = (TaskTracker::new(), shutdown.child_token());
        let engine =
            engine::Engine::new(fleet, store, settings, state, (stop.clone(), tasks.clone()));
        tasks.spawn(engine.run(rx));
        Controller { tx, tasks, stop }
    }

    /// [`Controller::start_with`] for a shared record: the engine steps
    /// only while `role` says this bridge leads; a follower refuses
    /// commands that change the rollout ([`ControllerError::NotLeader`])
    /// and applies the routes of the record as it changes.
    pub fn start_shared<F: Fleet, S: Store>(
        fleet: Arc<F>,
        store: S,
        state: MigrationState,
        settings: Settings,
        shutdown: CancellationToken,
        role: tokio::sync::watch::Receiver<Role>,
    ) -> Controller {
        let (tx, rx) = mpsc::channel(16);
        let (tasks, stop) = (TaskTracker::new(), shutdown.child_token());
        let mut engine =
            engine::Engine::new(fleet, store, settings, state, (stop.clone(), tasks.clone()));
        engine.role = Some(role);
        tasks.spawn(engine.run(rx));
        Controller { tx, tasks, stop }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ControllerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| ControllerError::Stopped)?;
        rx.await.map_err(|_| ControllerError::Stopped)?
    }

    /// The plan `apply` with these options would start now (`migrate plan`).
    pub async fn plan(&self, options: ApplyOptions) -> Result<Plan, ControllerError> {
        self.ask(|r| Command::Plan(options, r)).await
    }

    /// Start a rollout (`migrate apply`); returns its plan.
    pub async fn apply(&self, options: ApplyOptions) -> Result<Plan, ControllerError> {
        self.ask(|r| Command::Apply(options, r)).await
    }

    /// Hold the rollout: no node starts or cuts over; soaks go on.
    pub async fn pause(&self) -> Result<(), ControllerError> {
        self.ask(Command::Pause).await
    }

    /// Continue a paused rollout; nodes held in shadow restart their shadow.
    pub async fn resume(&self) -> Result<(), ControllerError> {
        self.ask(Command::Resume).await
    }

    /// Send nodes back to ssh at once (persisted first); returns the nodes
    /// that moved. Nodes already on ssh are left as they are.
    pub async fn rollback(&self, target: RollbackTarget) -> Result<Vec<String>, ControllerError> {
        self.ask(|r| Command::Rollback(target, r)).await
    }

    /// Record the end of the migration; only when every node is `done`.
    pub async fn finalize(&self) -> Result<FinalState, ControllerError> {
        self.ask(Command::Finalize).await
    }

    /// A snapshot of the rollout (`migrate status`, `/migration`).
    pub async fn status(&self) -> Result<Status, ControllerError> {
        self.ask(Command::Status).await
    }

    /// Stop the task and its watchers and wait until every one of them has
    /// ended (the state on disk is kept). Later commands fail with
    /// [`ControllerError::Stopped`].
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Tasks running now: the controller task and its watchers (0 once
    /// [`Controller::shutdown`] returned).
    pub fn running_tasks(&self) -> usize {
        self.tasks.len()
    }
}
