//! The table of other bridges: who is live, who is gone, and what the
//! migration is told.

use std::time::{Duration, Instant, SystemTime};

use sshbridge_kubeapi::status::StatusObject;

use super::{Peers, GONE_AFTER_INTERVALS};

const INTERVAL: Duration = Duration::from_secs(5);

fn peers() -> Peers {
    let p = Peers::default();
    {
        let mut t = p.lock();
        t.settings = Some(("kube-system".into(), INTERVAL));
        t.own = "cp-1".into();
    }
    p
}

fn object(bridge: &str, version: &str, published: SystemTime) -> StatusObject {
    StatusObject {
        bridge: bridge.into(),
        interval: INTERVAL,
        published,
        nodes: r#"{"node-a":{"k":{"st":"up","n":3,"f":0},"a":1}}"#.into(),
        resource_version: version.into(),
    }
}

#[test]
fn own_object_is_skipped_and_a_fresh_peer_is_live() {
    let p = peers();
    let wall = SystemTime::now();
    p.update(
        vec![object("cp-1", "1", wall), object("cp-2", "2", wall)],
        Instant::now(),
        wall,
    );
    let v = p.views("node-a");
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].bridge, "cp-2");
    assert_eq!(v[0].gone, None);
    assert_eq!(v[0].node.as_ref().unwrap().agents, 1);
    assert!(p.views("node-z")[0].node.is_none());
}

#[test]
fn an_unchanged_object_turns_gone_after_three_intervals_and_back_on_a_write() {
    let p = peers();
    let wall = SystemTime::now();
    let start = Instant::now();
    let past = start - INTERVAL * GONE_AFTER_INTERVALS - Duration::from_secs(1);
    // Listed long ago and unchanged since: gone.
    p.update(vec![object("cp-2", "7", wall)], past, wall);
    p.update(vec![object("cp-2", "7", wall)], start, wall);
    let gone = p.views("node-a")[0].gone.clone().expect("gone");
    assert!(gone.contains("no status for 16s"), "{gone}");
    // A new version: live again.
    p.update(vec![object("cp-2", "8", wall)], start, wall);
    assert_eq!(p.views("node-a")[0].gone, None);
}

#[test]
fn an_object_old_at_first_sight_is_gone_at_once() {
    let p = peers();
    let wall = SystemTime::now();
    let old = wall - Duration::from_secs(60);
    p.update(vec![object("cp-3", "1", old)], Instant::now(), wall);
    assert!(p.views("node-a")[0].gone.is_some());
}

#[test]
fn unread_objects_fail_the_check_and_off_says_nothing() {
    let p = peers();
    let v = p.views("node-a");
    assert_eq!(v.len(), 1);
    assert!(v[0].bridge.contains("not read yet"), "{v:?}");
    assert!(v[0].node.is_none() && v[0].gone.is_none());
    let off = Peers::default();
    assert!(off.views("node-a").is_empty());
}
