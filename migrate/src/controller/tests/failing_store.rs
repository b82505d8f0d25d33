//! A store that fails the n-th write (once, which the retry rides out, or
//! two or four times in a row, which undoes the step, and then the retry
//! of the step too), for every n of a rollout that
//! also rolls a node back on a soak breach and is then rolled back by the
//! operator. At every write the live routes must agree with what the store
//! last recorded, a node serving over konnectivity before it is `done` must
//! be watched, and the rollout must still reach its end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sshbridge_config::Route;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use super::fake::{settings, within, FakeFleet};
use crate::controller::{Controller, ControllerError, RollbackTarget, Status};
use crate::settings::ApplyOptions;
use crate::state::{MigrationState, NodePhase, RunPhase};
use crate::store::{FileStore, Store, StoreError};

/// Which writes fail: `count` writes in a row from the `first`-th.
#[derive(Debug, Clone, Copy)]
struct Fail {
    first: usize,
    count: usize,
}

struct FailingStore {
    inner: FileStore,
    fail: Option<Fail>,
    calls: Arc<AtomicUsize>,
    fleet: Arc<FakeFleet>,
    /// The state as last written, to check the routes against.
    saved: MigrationState,
    /// Every disagreement seen, for the test to report.
    broken: Arc<Mutex<Vec<String>>>,
}

impl Store for FailingStore {
    async fn load(&mut self) -> Result<Option<MigrationState>, StoreError> {
        self.inner.read()
    }

    async fn save(&mut self, state: &MigrationState) -> Result<(), StoreError> {
        self.save_now(state)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

impl FailingStore {
    fn save_now(&mut self, state: &MigrationState) -> Result<(), StoreError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        for (node, route) in self.fleet.routes() {
            let recorded = self.saved.phase_of(&node);
            if route != recorded.route() {
                self.broken.lock().unwrap().push(format!(
                    "at write {n}: {node} is routed {route} but the store says {recorded}"
                ));
            }
        }
        if self
            .fail
            .is_some_and(|f| (f.first..f.first + f.count).contains(&n))
        {
            return Err(StoreError::Io {
                path: self.inner.path().to_owned(),
                op: "write it (injected failure)",
                source: std::io::Error::other("disk full"),
            });
        }
        self.inner.write(state)?;
        self.saved = state.clone();
        Ok(())
    }
}

fn phase(s: &Status, node: &str) -> NodePhase {
    s.nodes
        .iter()
        .find(|n| n.name == node)
        .map_or(NodePhase::Ssh, |n| n.phase)
}

/// Every node serving over konnectivity before `done` has a watcher.
fn unwatched(s: &Status, fleet: &FakeFleet) -> Vec<String> {
    s.nodes
        .iter()
        .filter(|n| matches!(n.phase, NodePhase::Cutover | NodePhase::Soak))
        .filter(|n| fleet.route(&n.name) == Route::Konnectivity)
        .filter(|n| {
            !s.waiting_for
                .iter()
                .any(|w| w.starts_with(&format!("{}: soak", n.name)))
        })
        .map(|n| {
            format!(
                "{} in {} is on konnectivity with nothing watching it: {s:?}",
                n.name, n.phase
            )
        })
        .collect()
}

/// Retries `op` while the store refuses it.
async fn until_saved<T>(mut op: impl AsyncFnMut() -> Result<T, ControllerError>) -> T {
    within(async {
        loop {
            match op().await {
                Ok(v) => return v,
                Err(ControllerError::Store(_)) => sleep(Duration::from_secs(2)).await,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
}

/// The scenario; returns the number of writes tried and every violation.
async fn run(fail: Option<Fail>) -> (usize, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FakeFleet::new(2);
    let calls = Arc::new(AtomicUsize::new(0));
    let broken = Arc::new(Mutex::new(Vec::new()));
    let store = FailingStore {
        inner: FileStore::new(dir.path().join("migration.json")),
        fail,
        calls: calls.clone(),
        fleet: fleet.clone(),
        saved: MigrationState::default(),
        broken: broken.clone(),
    };
    let ctl = Controller::start(fleet.clone(), store, settings(1), CancellationToken::new())
        .await
        .unwrap();
    until_saved(async || ctl.apply(ApplyOptions::default()).await).await;
    let mut breached = false;
    within(async {
        loop {
            let s = ctl.status().await.unwrap();
            broken.lock().unwrap().extend(unwatched(&s, &fleet));
            // node-b fails its soak: rolled back, the rollout pauses.
            if !breached && phase(&s, "node-b") == NodePhase::Soak {
                fleet.edit("node-b", |n| n.konn_error = Some("agent gone".into()));
                breached = true;
            }
            match s.phase {
                RunPhase::Finished => break,
                RunPhase::Paused => {
                    let _ = ctl.resume().await;
                }
                _ => {}
            }
            sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    until_saved(async || ctl.rollback(RollbackTarget::All).await).await;
    let s = ctl.status().await.unwrap();
    for node in ["node-a", "node-b"] {
        assert_eq!(phase(&s, node), NodePhase::RolledBack, "{fail:?}: {s:?}");
        assert_eq!(fleet.route(node), Route::Ssh, "{fail:?}: {s:?}");
    }
    let saved = FileStore::new(dir.path().join("migration.json"))
        .read()
        .unwrap()
        .unwrap();
    assert!(saved
        .nodes
        .values()
        .all(|r| r.phase == NodePhase::RolledBack));
    within(ctl.shutdown()).await;
    let broken = broken.lock().unwrap().clone();
    (calls.load(Ordering::SeqCst), broken)
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_never_lets_the_store_and_the_routes_disagree() {
    let (total, broken) = run(None).await;
    assert!(broken.is_empty(), "{broken:#?}");
    assert!(
        total >= 12,
        "the scenario writes at least 12 times, saw {total}"
    );
    for first in 1..=total {
        for count in [1, 2, 4] {
            let fail = Fail { first, count };
            let (_, broken) = run(Some(fail)).await;
            assert!(broken.is_empty(), "{fail:?}: {broken:#?}");
        }
    }
}
