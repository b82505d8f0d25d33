//! The controller against a fake fleet, in paused time, with a real file
//! store in a temp dir.

mod conflict;
mod crash;
mod failing_store;
mod fake;
mod follow;
mod lifecycle;
mod peers;

use std::sync::Arc;
use std::time::Duration;

use sshbridge_config::Route;
use tokio_util::sync::CancellationToken;

use self::fake::{name, settings, wait_until, within, FakeFleet};
use super::{Controller, ControllerError, RollbackTarget};
use crate::settings::{ApplyOptions, Settings};
use crate::state::{NodePhase, RunPhase};
use crate::store::FileStore;

fn start(fleet: &Arc<FakeFleet>, dir: &tempfile::TempDir, s: Settings) -> Controller {
    let store = FileStore::new(dir.path().join("migration.json"));
    let state = store.read().expect("start").unwrap_or_default();
    Controller::start_with(fleet.clone(), store, state, s, CancellationToken::new())
}

fn phases(s: &super::Status) -> Vec<(String, NodePhase)> {
    s.nodes.iter().map(|n| (n.name.clone(), n.phase)).collect()
}

#[tokio::test(start_paused = true)]
async fn full_apply_moves_five_nodes_batch_by_batch() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FakeFleet::new(5);
    let ctl = start(&fleet, &dir, settings(2));
    let plan = within(ctl.apply(ApplyOptions::default())).await.unwrap();
    assert_eq!(plan.batches.len(), 3);
    let batches = plan.batches.clone();
    // Watch every half second that no batch starts before the last is over.
    let fin = wait_until(&ctl, |s| {
        for (i, b) in batches.iter().enumerate().skip(1) {
            let started = b.iter().any(|n| {
                s.nodes
                    .iter()
                    .any(|x| &x.name == n && x.phase != NodePhase::Ssh)
            });
            let prev_done = batches[i - 1].iter().all(|n| {
                s.nodes
                    .iter()
                    .any(|x| &x.name == n && x.phase == NodePhase::Done)
            });
            assert!(
                !started || prev_done,
                "batch {} started early: {s:?}",
                i + 1
            );
        }
        s.phase == RunPhase::Finished
    })
    .await;
    assert!(!fin.regressed());
    for n in &fin.nodes {
        assert_eq!(n.phase, NodePhase::Done, "{fin:?}");
        assert_eq!(fleet.route(&n.name), Route::Konnectivity);
        let path: Vec<_> = n.history.iter().map(|t| t.to).collect();
        use NodePhase::*;
        assert_eq!(path, [Shadow, Cutover, Soak, Done]);
        assert!(n.comparison.as_ref().unwrap().passed);
    }
    let saved = FileStore::new(dir.path().join("migration.json"))
        .read()
        .unwrap()
        .unwrap();
    assert_eq!(saved.phase, RunPhase::Finished);
    assert!(saved.nodes.values().all(|r| r.phase == NodePhase::Done));
    let end = within(ctl.finalize()).await.unwrap();
    assert_eq!(end.nodes.len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_node_without_an_agent_stays_on_ssh_and_the_plan_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FakeFleet::new(3);
    fleet.edit("node-b", |n| n.agents = 0);
    let ctl = start(&fleet, &dir, settings(5));
    let plan = within(ctl.plan(ApplyOptions::default())).await.unwrap();
    assert_eq!(plan.not_ready.len(), 1);
    assert_eq!(plan.not_ready[0].node, "node-b");
    assert!(plan.not_ready[0].reason.contains("no Konnectivity agent"));
    within(ctl.apply(ApplyOptions::default())).await.unwrap();
    let s = wait_until(&ctl, |s| s.phase == RunPhase::Finished).await;
    assert_eq!(fleet.route("node-b"), Route::Ssh);
    assert_eq!(fleet.route("node-a"), Route::Konnectivity);
    assert!(s.nodes.iter().all(|n| n.name != "node-b"), "{s:?}");
    let err = within(ctl.finalize()).await.unwrap_err();
    assert!(
        matches!(err, ControllerError::NotDone(ref v) if v[0].0 == "node-b"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn dial_failures_during_soak_roll_that_node_back_and_pause() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FakeFleet::new(3);
    let ctl = start(&fleet, &dir, settings(3));
    within(ctl.apply(ApplyOptions::default())).await.unwrap();
    wait_until(&ctl, |s| s.nodes.iter().all(|n| n.phase == NodePhase::Soak)).await;
    fleet.edit("node-b", |n| {
        n.konn_live.dials_ok += 7;
        n.konn_live.dials_failed += 1;
        n.konn_live.last_error = Some("dial 10.0.0.2:10250: connection refused".into());
    });
    let s = wait_until(&ctl, |s| s.regressed()).await;
    assert_eq!(s.phase, RunPhase::Paused);
    assert_eq!(s.rolled_back, ["node-b"]);
    assert_eq!(fleet.route("node-b"), Route::Ssh);
    let reason = s.nodes[1].rollback_reason.clone().unwrap();
    assert!(
        reason.contains("dials failed during soak: 1 of 8"),
        "{reason}"
    );
    assert!(reason.contains("connection refused"), "{reason}");
    assert!(s.reason.as_deref().unwrap().contains("node-b"), "{s:?}");
    // The others finish their soak while the rollout is paused.
    let s = wait_until(&ctl, |s| {
        s.nodes
            .iter()
            .filter(|n| n.phase == NodePhase::Done)
            .count()
            == 2
    })
    .await;
    assert_eq!(fleet.route("node-a"), Route::Konnectivity);
    assert_eq!(fleet.route("node-c"), Route::Konnectivity);
    assert!(s.regressed(), "exit 3 stays due");
}

#[tokio::test(start_paused = true)]
async fn abort_on_failure_sends_every_unfinished_node_back() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FakeFleet::new(4);
    let ctl = start(&fleet, &dir, settings(2));
    let opts = ApplyOptions {
        abort_on_failure: true,
        soak: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    within(ctl.apply(opts)).await.unwrap();
    wait_until(&ctl, |s| {
        s.nodes[..2].iter().all(|n| n.phase == NodePhase::Soak)
    })
    .await;
    fleet.edit("node-b", |n| {
        n.konn_error = Some("agent stream closed".into())
    });
    let s = wait_until(&ctl, |s| s.phase == RunPhase::Aborted).await;
    assert_eq!(s.rolled_back, ["node-a", "node-b"], "{s:?}");
    assert!(s.nodes[0]
        .rollback_reason
        .as_ref()
        .unwrap()
        .starts_with("rollout aborted: node node-b"));
    assert!(s.nodes[1]
        .rollback_reason
        .as_ref()
        .unwrap()
        .contains("agent stream closed"));
    for i in 0..4 {
        assert_eq!(fleet.route(&name(i)), Route::Ssh);
    }
    tokio::time::sleep(Duration::from_secs(300)).await;
    let s = within(ctl.status()).await.unwrap();
    assert_eq!(
        phases(&s)[2].1,
        NodePhase::Ssh,
        "batch 2 must not start: {s:?}"
    );
    assert!(matches!(
        within(ctl.resume()).await,
        Err(ControllerError::WrongPhase { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn rollback_all_returns_every_node_to_ssh_and_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FakeFleet::new(4);
    let ctl = start(&fleet, &dir, settings(2));
    within(ctl.apply(ApplyOptions::default())).await.unwrap();
    // Mid-rollout: batch 1 done, batch 2 somewhere in its steps.
    wait_until(&ctl, |s| s.nodes[2].phase == NodePhase::Soak).await;
    let moved = within(ctl.rollback(RollbackTarget::All)).await.unwrap();
    assert_eq!(moved, ["node-a", "node-b", "node-c", "node-d"]);
    assert!(fleet.routes().values().all(|r| *r == Route::Ssh));
    let s = within(ctl.status()).await.unwrap();
    assert_eq!(s.phase, RunPhase::Aborted);
    assert!(s.regressed());
    let saved = FileStore::new(dir.path().join("migration.json"))
        .read()
        .unwrap()
        .unwrap();
    assert!(saved
        .nodes
        .values()
        .all(|r| r.phase == NodePhase::RolledBack));
    let err = within(ctl.rollback(RollbackTarget::Nodes(vec!["node-z".into()]))).await;
    assert!(matches!(err, Err(ControllerError::UnknownNode(ref n)) if n == "node-z"));
    assert!(within(ctl.finalize()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn rolling_back_one_node_pauses_the_rollout_and_spares_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FakeFleet::new(3);
    let ctl = start(&fleet, &dir, settings(2));
    within(ctl.apply(ApplyOptions::default())).await.unwrap();
    wait_until(&ctl, |s| {
        s.nodes[..2].iter().all(|n| n.phase == NodePhase::Soak)
    })
    .await;
    let moved = within(ctl.rollback(RollbackTarget::Nodes(vec![
        "node-a".into(),
        "node-c".into(),
    ])))
    .await
    .unwrap();
    assert_eq!(moved, ["node-a"], "node-c had not started");
    assert_eq!(fleet.route("node-a"), Route::Ssh);
    let s = wait_until(&ctl, |s| s.nodes[1].phase == NodePhase::Done).await;
    assert_eq!(s.phase, RunPhase::Paused);
    assert_eq!(
        s.nodes[0].rollback_reason.as_deref(),
        Some("rolled back by the operator")
    );
    assert_eq!(fleet.route("node-b"), Route::Konnectivity);
    assert_eq!(fleet.route("node-c"), Route::Ssh);
}

#[tokio::test(start_paused = true)]
async fn a_slow_or_silent_konnectivity_path_fails_shadow_with_its_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FakeFleet::new(2);
    fleet.edit("node-a", |n| n.konn_latency = Duration::from_millis(25));
    fleet.edit("node-b", |n| n.konn_hangs = true);
    let ctl = start(&fleet, &dir, settings(2));
    within(ctl.apply(ApplyOptions::default())).await.unwrap();
    // node-a fails first; the pause holds node-b's shadow until resume.
    let s = wait_until(&ctl, |s| s.regressed()).await;
    assert_eq!(s.phase, RunPhase::Paused);
    assert_eq!(s.rolled_back, ["node-a"]);
    let a = s.nodes[0].comparison.as_ref().unwrap();
    assert!(
        !a.passed && a.reason.contains("2.50x ssh p99"),
        "{}",
        a.reason
    );
    assert_eq!(s.nodes[1].phase, NodePhase::Shadow);
    within(ctl.resume()).await.unwrap();
    let s = wait_until(&ctl, |s| s.rolled_back.len() == 2).await;
    let b = s.nodes[1].comparison.as_ref().unwrap();
    assert_eq!(b.konnectivity.failures, 3);
    assert!(b.reason.contains("within 5s"), "{}", b.reason);
    assert!(fleet.routes().values().all(|r| *r == Route::Ssh));
}

#[tokio::test(start_paused = true)]
async fn pause_holds_cutover_and_resume_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FakeFleet::new(2);
    let ctl = start(&fleet, &dir, settings(2));
    within(ctl.apply(ApplyOptions::default())).await.unwrap();
    within(ctl.pause()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let s = within(ctl.status()).await.unwrap();
    assert_eq!(s.phase, RunPhase::Paused);
    assert!(
        s.nodes.iter().all(|n| n.phase == NodePhase::Shadow),
        "{s:?}"
    );
    assert!(s
        .waiting_for
        .iter()
        .any(|w| w.contains("held while the rollout is paused")));
    assert!(fleet.routes().values().all(|r| *r == Route::Ssh));
    assert!(matches!(
        within(ctl.apply(ApplyOptions::default())).await,
        Err(ControllerError::NodeInFlight { .. })
    ));
    within(ctl.resume()).await.unwrap();
    let s = wait_until(&ctl, |s| s.nodes.iter().all(|n| n.phase == NodePhase::Soak)).await;
    let left = &s.nodes[0].waiting_for.clone().unwrap();
    assert!(
        left.starts_with("soak: ") && left.ends_with(" left"),
        "{left}"
    );
    wait_until(&ctl, |s| s.phase == RunPhase::Finished).await;
    assert!(fleet.routes().values().all(|r| *r == Route::Konnectivity));
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_state_file_stops_the_start_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("migration.json");
    std::fs::write(&path, "{\"schema\": 1, \"nodes\": {\"node-a\": ").unwrap();
    let fleet = FakeFleet::new(1);
    fleet.edit("node-a", |n| n.route = Route::Konnectivity);
    let err = Controller::start(
        fleet.clone(),
        FileStore::new(&path),
        settings(1),
        CancellationToken::new(),
    )
    .await
    .err()
    .expect("a corrupt file must be refused");
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"schema\": 1, \"nodes\": {\"node-a\": "
    );
    assert_eq!(
        fleet.route("node-a"),
        Route::Konnectivity,
        "routes untouched"
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_waits_for_a_reconnecting_agent_before_counting_probes() {
    let fleet = FakeFleet::new(1);
    // The agent is gone (the daemon just restarted) and is back after 3 s.
    fleet.edit("node-a", |n| n.agents = 0);
    let later = fleet.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        later.edit("node-a", |n| n.agents = 1);
    });
    let s = settings(1);
    let token = CancellationToken::new();
    let t0 = tokio::time::Instant::now();
    assert!(super::workers::wait_ready(&*fleet, "node-a", true, &s, &token).await);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // A node that never gets ready is waited for `ready_timeout`, then the
    // step goes on (its probes will say why it fails).
    fleet.edit("node-a", |n| n.ssh_up = false);
    let t0 = tokio::time::Instant::now();
    assert!(super::workers::wait_ready(&*fleet, "node-a", true, &s, &token).await);
    assert!(t0.elapsed() >= s.ready_timeout);
    // Cancelled while waiting: the step ends without a verdict.
    token.cancel();
    assert!(!super::workers::wait_ready(&*fleet, "node-a", true, &s, &token).await);
}
