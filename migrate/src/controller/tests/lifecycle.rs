//! The controller's own life: started from an old state file, and stopped.

use sshbridge_config::Route;

use super::fake::{settings, wait_until, within, FakeFleet};
use super::start;
use crate::controller::{ControllerError, RollbackTarget};
use crate::settings::ApplyOptions;
use crate::state::NodePhase;

/// A state file written before soaks were bounded may hold any soak: the
/// controller must start from it, show it and roll it back, never panic on
/// the deadline it computes.
#[tokio::test(start_paused = true)]
async fn a_saved_soak_of_any_length_never_overflows_a_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FakeFleet::new(1);
    let ctl = start(&fleet, &dir, settings(1));
    within(ctl.apply(ApplyOptions::default())).await.unwrap();
    wait_until(&ctl, |s| s.nodes.iter().all(|n| n.phase == NodePhase::Soak)).await;
    within(ctl.shutdown()).await;
    let path = dir.path().join("migration.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["run"]["settings"]["soak"] = "10000000000000000000s".into();
    v["run"]["settings"]["probe_interval"] = "10000000000000000000s".into();
    std::fs::write(&path, v.to_string()).unwrap();
    let fleet = FakeFleet::new(1);
    let ctl = start(&fleet, &dir, settings(1));
    let s = wait_until(&ctl, |s| !s.waiting_for.is_empty()).await;
    assert!(s.waiting_for[0].contains("soak"), "{s:?}");
    assert_eq!(fleet.route("node-a"), Route::Konnectivity);
    let back = within(ctl.rollback(RollbackTarget::All)).await.unwrap();
    assert_eq!(back, ["node-a"]);
    assert_eq!(fleet.route("node-a"), Route::Ssh);
    within(ctl.shutdown()).await;
}

/// `shutdown` stops the controller task and the watchers it started (here
/// a soak watcher) and returns only once every one of them has ended.
#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_the_task_and_its_watchers() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FakeFleet::new(2);
    let ctl = start(&fleet, &dir, settings(2));
    within(ctl.apply(ApplyOptions::default())).await.unwrap();
    wait_until(&ctl, |s| s.nodes.iter().all(|n| n.phase == NodePhase::Soak)).await;
    assert_eq!(ctl.running_tasks(), 3, "the task and two soak watchers");
    within(ctl.shutdown()).await;
    assert_eq!(ctl.running_tasks(), 0, "tasks left after shutdown");
    assert!(matches!(
        within(ctl.status()).await,
        Err(ControllerError::Stopped)
    ));
}
