//! Another writer wins: the controller's write is refused with a
//! conflict, is never repeated blindly, and the controller continues from
//! the record as the other writer left it (its routes included).

use std::sync::{Arc, Mutex};

use sshbridge_config::Route;
use tokio_util::sync::CancellationToken;

use super::fake::{name, settings, wait_until, within, FakeFleet};
use crate::controller::Controller;
use crate::settings::ApplyOptions;
use crate::state::{MigrationState, NodePhase};
use crate::store::{Store, StoreError};

/// The shared record: a version that every write moves.
#[derive(Default)]
pub(super) struct Remote {
    pub(super) version: u64,
    pub(super) state: Option<MigrationState>,
    pub(super) writes: usize,
    /// Who wrote each write, in order.
    pub(super) writers: Vec<&'static str>,
}

/// A store with optimistic concurrency, like the Kubernetes one.
pub(super) struct Versioned {
    pub(super) remote: Arc<Mutex<Remote>>,
    pub(super) seen: u64,
    pub(super) who: &'static str,
}

impl Store for Versioned {
    async fn load(&mut self) -> Result<Option<MigrationState>, StoreError> {
        let r = self.remote.lock().unwrap();
        self.seen = r.version;
        Ok(r.state.clone())
    }

    async fn save(&mut self, state: &MigrationState) -> Result<(), StoreError> {
        let mut r = self.remote.lock().unwrap();
        if r.version != self.seen {
            return Err(StoreError::Conflict {
                object: "the test record".into(),
                seen: format!("version {}", self.seen),
            });
        }
        r.version += 1;
        r.writes += 1;
        r.writers.push(self.who);
        r.state = Some(state.clone());
        self.seen = r.version;
        Ok(())
    }

    fn describe(&self) -> String {
        "the test record".into()
    }
}

#[tokio::test(start_paused = true)]
async fn a_conflict_is_not_retried_and_the_record_is_read_again() {
    let fleet = FakeFleet::new(2);
    let remote = Arc::new(Mutex::new(Remote::default()));
    let store = Versioned {
        remote: remote.clone(),
        seen: 0,
        who: "this bridge",
    };
    let ctl = Controller::start(fleet.clone(), store, settings(2), CancellationToken::new())
        .await
        .unwrap();

    // Another bridge finished node-0 behind this one's back.
    let mut theirs = MigrationState::default();
    for to in [
        NodePhase::Shadow,
        NodePhase::Cutover,
        NodePhase::Soak,
        NodePhase::Done,
    ] {
        theirs.transition(&name(0), to, "the other bridge").unwrap();
    }
    {
        let mut r = remote.lock().unwrap();
        r.version += 1;
        r.state = Some(theirs.clone());
    }

    // This bridge's apply is refused, written once only, and the record
    // is the other bridge's.
    let err = within(ctl.apply(ApplyOptions::default()))
        .await
        .expect_err("a write over another writer's record");
    assert!(
        err.to_string().contains("changed by another writer"),
        "{err}"
    );
    {
        let r = remote.lock().unwrap();
        assert_eq!(r.writes, 0, "the conflicting write was repeated or applied");
        assert_eq!(r.state.as_ref(), Some(&theirs));
    }
    // It continues from that record: node-0 done and served over
    // konnectivity here too, node-1 untouched.
    let s = wait_until(&ctl, |s| s.nodes.iter().any(|n| n.name == name(0))).await;
    let node0 = s.nodes.iter().find(|n| n.name == name(0)).unwrap();
    assert_eq!(node0.phase, NodePhase::Done);
    assert_eq!(fleet.route(&name(0)), Route::Konnectivity);
    assert_eq!(fleet.route(&name(1)), Route::Ssh);

    // Having read it, its next apply lands and moves only node-1.
    let plan = within(ctl.apply(ApplyOptions::default())).await.unwrap();
    assert_eq!(plan.nodes().cloned().collect::<Vec<_>>(), [name(1)]);
    let r = remote.lock().unwrap();
    assert!(r.writes >= 1, "nothing written after the reread");
    assert_eq!(
        r.state.as_ref().unwrap().phase_of(&name(0)),
        NodePhase::Done
    );
    assert_eq!(
        r.state.as_ref().unwrap().phase_of(&name(1)),
        NodePhase::Shadow
    );
}
