//! A crash just before and just after each store write of a whole rollout:
//! the daemon dies (its routes freeze, nothing more is written), a new
//! controller starts from the same file over a fresh daemon, and the rollout
//! completes. "Before" catches an effect that ran ahead of its write;
//! "after" catches a write whose effect is lost.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sshbridge_config::Route;
use tokio_util::sync::CancellationToken;

use super::fake::{settings, wait_until, within, FakeFleet};
use crate::controller::Controller;
use crate::settings::ApplyOptions;
use crate::state::{MigrationState, NodePhase, RunPhase};
use crate::store::{FileStore, Store, StoreError};

/// When the process dies: at the n-th write, before or after it lands.
#[derive(Debug, Clone, Copy)]
struct Crash {
    write: usize,
    after: bool,
}

/// A file store that "kills the process" at a chosen write.
struct CrashStore {
    inner: FileStore,
    crash: Option<Crash>,
    writes: Arc<AtomicUsize>,
    crashed: Arc<AtomicBool>,
    fleet: Arc<FakeFleet>,
}

impl Store for CrashStore {
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

impl CrashStore {
    fn save_now(&mut self, state: &MigrationState) -> Result<(), StoreError> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(StoreError::Io {
                path: self.inner.path().to_owned(),
                op: "write (the process is dead)",
                source: std::io::Error::other("crashed"),
            });
        }
        let n = self.writes.load(Ordering::SeqCst) + 1;
        let crash_now = self.crash.is_some_and(|c| c.write == n);
        if crash_now && !self.crash.is_some_and(|c| c.after) {
            self.crashed.store(true, Ordering::SeqCst);
            self.fleet.freeze();
            return self.save_now(state);
        }
        self.inner.write(state)?;
        self.writes.store(n, Ordering::SeqCst);
        if crash_now {
            self.crashed.store(true, Ordering::SeqCst);
            self.fleet.freeze();
        }
        Ok(())
    }
}

/// Run a rollout of two nodes, one per batch, until `crash` (or the end).
/// Returns the number of writes that landed and the dead daemon.
async fn run_until_crash(dir: &std::path::Path, crash: Option<Crash>) -> (usize, Arc<FakeFleet>) {
    let fleet = FakeFleet::new(2);
    let writes = Arc::new(AtomicUsize::new(0));
    let crashed = Arc::new(AtomicBool::new(false));
    let store = CrashStore {
        inner: FileStore::new(dir.join("migration.json")),
        crash,
        writes: writes.clone(),
        crashed: crashed.clone(),
        fleet: fleet.clone(),
    };
    let ctl = Controller::start(fleet.clone(), store, settings(1), CancellationToken::new())
        .await
        .unwrap();
    let applied = within(ctl.apply(ApplyOptions::default())).await;
    assert!(
        applied.is_ok() || crashed.load(Ordering::SeqCst),
        "{applied:?}"
    );
    wait_until(&ctl, |s| {
        crashed.load(Ordering::SeqCst) || (crash.is_none() && s.phase == RunPhase::Finished)
    })
    .await;
    within(ctl.shutdown()).await;
    (writes.load(Ordering::SeqCst), fleet)
}

#[tokio::test(start_paused = true)]
async fn a_crash_around_any_write_resumes_and_completes() {
    let reference = tempfile::tempdir().unwrap();
    let (total, _) = run_until_crash(reference.path(), None).await;
    assert!(
        total >= 10,
        "a 2-node rollout writes at least 10 times, saw {total}"
    );
    let mut seen = BTreeSet::new();
    let crashes = (1..=total).flat_map(|write| [false, true].map(|after| Crash { write, after }));
    for crash in crashes {
        let n = format!("{crash:?}");
        let dir = tempfile::tempdir().unwrap();
        let (_, dead) = run_until_crash(dir.path(), Some(crash)).await;
        let file = FileStore::new(dir.path().join("migration.json"));
        let saved = file.read().unwrap().unwrap_or_default();
        // Persist before effect: the dead daemon served konnectivity only
        // for nodes whose saved phase had reached it.
        for (node, route) in dead.routes() {
            let phase = saved.phase_of(&node);
            seen.insert(phase.as_str());
            if route == Route::Konnectivity {
                assert_eq!(phase.route(), Route::Konnectivity, "{n}: {node} in {phase}");
            }
        }
        // Restart over a fresh daemon (every node on ssh, as configured).
        let fleet = FakeFleet::new(2);
        let ctl = Controller::start(fleet.clone(), file, settings(1), CancellationToken::new())
            .await
            .unwrap();
        let s = within(ctl.status()).await.unwrap();
        for node in &s.nodes {
            assert_eq!(
                fleet.route(&node.name),
                node.phase.route(),
                "after {n}: {s:?}"
            );
        }
        if s.phase == RunPhase::Idle {
            // Died before `apply` was recorded: nothing to resume, apply again.
            assert!(fleet.routes().values().all(|r| *r == Route::Ssh));
            within(ctl.apply(ApplyOptions::default())).await.unwrap();
        }
        let s = wait_until(&ctl, |s| s.phase == RunPhase::Finished).await;
        assert!(
            s.nodes.len() == 2 && s.nodes.iter().all(|x| x.phase == NodePhase::Done),
            "after {n}: {s:?}"
        );
        assert!(fleet.routes().values().all(|r| *r == Route::Konnectivity));
        tokio::time::sleep(Duration::from_millis(1)).await;
        within(ctl.shutdown()).await;
    }
    for phase in ["ssh", "shadow", "cutover", "soak", "done"] {
        assert!(
            seen.contains(phase),
            "no crash happened in {phase}: {seen:?}"
        );
    }
}
