//! Health across bridges in the controller: a node is cut over, and stays
//! cut over, only while every live bridge sees it healthy.

use std::sync::Arc;

use sshbridge_config::Route;

use super::fake::{settings, wait_until, within, FakeFleet};
use super::start;
use crate::peers::{NodeHealth, PathView, PeerView};
use crate::settings::ApplyOptions;
use crate::state::{NodePhase, RunPhase};

fn view(bridge: &str, k_state: &str, gone: Option<&str>) -> PeerView {
    let path = PathView {
        state: k_state.into(),
        window: 5,
        failures: if k_state == "up" { 0 } else { 5 },
        last_error: (k_state != "up").then(|| "dial 10.0.0.2:10250: no route to host".into()),
        ..PathView::default()
    };
    PeerView {
        bridge: bridge.into(),
        gone: gone.map(str::to_owned),
        node: Some(NodeHealth {
            ssh: None,
            konnectivity: Some(path),
            agents: 1,
        }),
    }
}

fn on(fleet: &Arc<FakeFleet>, node: &str, peers: Vec<PeerView>) {
    fleet.edit(node, |n| n.peers = peers);
}

#[tokio::test(start_paused = true)]
async fn healthy_on_two_of_three_bridges_is_not_cut_over_and_the_reason_names_the_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FakeFleet::new(2);
    // This bridge (cp-1) and cp-2 see node-b fine; cp-3 does not.
    on(
        &fleet,
        "node-b",
        vec![view("cp-2", "up", None), view("cp-3", "down", None)],
    );
    let ctl = start(&fleet, &dir, settings(2));
    within(ctl.apply(ApplyOptions::default())).await.unwrap();
    let s = wait_until(&ctl, |s| s.regressed()).await;
    assert_eq!(s.phase, RunPhase::Paused);
    assert_eq!(s.rolled_back, ["node-b"]);
    assert_eq!(fleet.route("node-b"), Route::Ssh);
    let b = s.nodes.iter().find(|n| n.name == "node-b").unwrap();
    let c = b.comparison.as_ref().unwrap();
    assert!(!c.passed);
    assert!(c.reason.contains("bridge cp-3"), "{}", c.reason);
    assert!(c.reason.contains("no route to host"), "{}", c.reason);
    assert!(!c.reason.contains("cp-2"), "{}", c.reason);
    let a = s.nodes.iter().find(|n| n.name == "node-a").unwrap();
    assert_ne!(a.phase, NodePhase::RolledBack, "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn a_gone_bridge_is_excluded_with_a_note_and_the_node_moves() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FakeFleet::new(1);
    let gone = view("cp-3", "down", Some("no status for 16s"));
    on(&fleet, "node-a", vec![view("cp-2", "up", None), gone]);
    let ctl = start(&fleet, &dir, settings(1));
    within(ctl.apply(ApplyOptions::default())).await.unwrap();
    let s = wait_until(&ctl, |s| s.phase == RunPhase::Finished).await;
    assert_eq!(fleet.route("node-a"), Route::Konnectivity);
    let c = s.nodes[0].comparison.as_ref().unwrap();
    assert!(c.passed, "{}", c.reason);
    assert!(
        c.reason
            .contains("bridge cp-3 is gone (no status for 16s), not counted"),
        "{}",
        c.reason
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_that_breaks_from_another_bridge_during_soak_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FakeFleet::new(1);
    on(&fleet, "node-a", vec![view("cp-2", "up", None)]);
    let ctl = start(&fleet, &dir, settings(1));
    within(ctl.apply(ApplyOptions::default())).await.unwrap();
    wait_until(&ctl, |s| s.nodes[0].phase == NodePhase::Soak).await;
    on(&fleet, "node-a", vec![view("cp-2", "degraded", None)]);
    let s = wait_until(&ctl, |s| s.regressed()).await;
    assert_eq!(fleet.route("node-a"), Route::Ssh);
    let reason = s.nodes[0].rollback_reason.clone().unwrap();
    assert!(reason.contains("bridge cp-2"), "{reason}");
    assert!(reason.contains("degraded"), "{reason}");
}
