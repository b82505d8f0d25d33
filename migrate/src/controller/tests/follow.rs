//! One driver, many followers: two controllers on one shared record, the
//! leader as a role says. The follower takes no step, refuses commands
//! naming the leader, and puts its nodes on the record's routes within a
//! second; when leadership moves, the new leader finishes the rollout
//! from the record and the old one writes nothing more.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sshbridge_config::Route;
use tokio::sync::watch;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

use super::conflict::{Remote, Versioned};
use super::fake::{name, settings, wait_until, within, FakeFleet};
use crate::controller::{Controller, ControllerError, Role};
use crate::settings::ApplyOptions;
use crate::state::{NodePhase, RunPhase};

fn role(leading: bool, leader: &str) -> Role {
    Role {
        leading,
        leader: Some(leader.into()),
    }
}

#[tokio::test(start_paused = true)]
async fn only_the_leader_steps_and_followers_apply_the_records_routes() {
    let remote = Arc::new(Mutex::new(Remote::default()));
    let bridge = |who: &'static str, leading: bool| {
        let fleet = FakeFleet::new(3);
        let (tx, rx) = watch::channel(role(leading, "bridge-a"));
        let store = Versioned {
            remote: remote.clone(),
            seen: 0,
            who,
        };
        let ctl = Controller::start_shared(
            fleet.clone(),
            store,
            Default::default(),
            settings(1),
            CancellationToken::new(),
            rx,
        );
        (fleet, tx, ctl)
    };
    let (fleet_a, role_a, a) = bridge("bridge-a", true);
    let (fleet_b, role_b, b) = bridge("bridge-b", false);

    // A command to the follower is refused, naming the leader.
    let err = within(b.apply(ApplyOptions::default())).await.unwrap_err();
    assert!(matches!(err, ControllerError::NotLeader(_)), "{err}");
    assert!(err.to_string().contains("bridge bridge-a"), "{err}");
    within(a.apply(ApplyOptions::default())).await.unwrap();

    // node-0 cuts over on the leader; the follower serves it over
    // konnectivity within a second of the record saying so.
    wait_until(&a, |s| {
        s.nodes
            .iter()
            .any(|n| n.name == name(0) && n.phase == NodePhase::Soak)
    })
    .await;
    let t0 = Instant::now();
    within(async {
        while fleet_b.route(&name(0)) != Route::Konnectivity {
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(t0.elapsed() <= Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(fleet_a.route(&name(0)), Route::Konnectivity);

    // The follower followed the running rollout and took no step.
    let writers = remote.lock().unwrap().writers.clone();
    assert!(
        !writers.contains(&"bridge-b"),
        "the follower wrote: {writers:?}"
    );

    // Leadership moves: A stops (no more writes by A), B continues from
    // the record to the end.
    role_a.send(role(false, "bridge-b")).unwrap();
    role_b.send(role(true, "bridge-b")).unwrap();
    sleep(Duration::from_millis(100)).await;
    let a_writes = remote
        .lock()
        .unwrap()
        .writers
        .iter()
        .filter(|w| **w == "bridge-a")
        .count();
    let err = within(a.pause()).await.unwrap_err();
    assert!(err.to_string().contains("bridge bridge-b"), "{err}");
    let fin = wait_until(&b, |s| s.phase == RunPhase::Finished).await;
    assert!(
        fin.nodes.iter().all(|n| n.phase == NodePhase::Done),
        "{fin:?}"
    );
    let writers = remote.lock().unwrap().writers.clone();
    let a_after = writers.iter().filter(|w| **w == "bridge-a").count();
    assert_eq!(
        a_after, a_writes,
        "the old leader wrote after losing: {writers:?}"
    );
    assert!(writers.contains(&"bridge-b"));
    // The old leader, now a follower, serves every node over konnectivity
    // as the record says.
    within(async {
        while (0..3).any(|i| fleet_a.route(&name(i)) != Route::Konnectivity) {
            sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}
