use super::*;
use crate::fixtures::{healthy_path, report};
use crate::{PathState, Route};

fn nodes3() -> Report {
    report(&["node-a", "node-b", "node-c"])
}

fn run(before: &Report, after: &Report) -> Diff {
    diff(before, after, &Thresholds::default())
}

fn only_change(d: &Diff) -> &Change {
    assert_eq!(d.changes.len(), 1, "{:#?}", d.changes);
    &d.changes[0]
}

#[test]
fn identical_reports_have_no_changes() {
    let d = run(&nodes3(), &nodes3());
    assert!(!d.is_regression());
    assert!(d.changes.is_empty());
    assert_eq!(d.verdict, "OK: no regressions (no changes)");
}

#[test]
fn state_getting_worse_is_a_regression_and_named_in_the_verdict() {
    let before = nodes3();
    let mut after = nodes3();
    after.nodes[1].paths.ssh.state = PathState::Down;
    let d = run(&before, &after);
    let c = only_change(&d);
    assert_eq!(
        (c.node.as_str(), c.path.as_deref(), c.what),
        ("node-b", Some("ssh"), What::State)
    );
    assert_eq!(
        (c.before.as_deref(), c.after.as_deref()),
        (Some("up"), Some("down"))
    );
    assert!(c.is_regression);
    assert_eq!(d.regressed_nodes, ["node-b"]);
    assert_eq!(
        d.verdict,
        "REGRESSION: 1 of 3 nodes got worse (node-b: ssh up -> down)"
    );

    // The other direction is an improvement, shown but not a regression.
    let d = run(&after, &before);
    assert!(!only_change(&d).is_regression);
    assert_eq!(d.verdict, "OK: no regressions (1 informational change)");
}

#[test]
fn state_order_is_up_degraded_unknown_down() {
    use PathState::*;
    let cases = [
        (Up, Degraded, true),
        (Degraded, Unknown, true),
        (Unknown, Down, true),
        (Unknown, Up, false),
        (Down, Degraded, false),
        (Degraded, Up, false),
    ];
    for (from, to, regression) in cases {
        let (mut before, mut after) = (nodes3(), nodes3());
        before.nodes[0].paths.ssh.state = from;
        after.nodes[0].paths.ssh.state = to;
        let d = run(&before, &after);
        assert_eq!(d.is_regression(), regression, "{from} -> {to}");
    }
}

#[test]
fn failure_ratio_rise_beyond_threshold_is_a_regression() {
    let (before, mut after) = (nodes3(), nodes3());
    after.nodes[2].paths.ssh.probe.failure_ratio = 0.05; // exactly the threshold
    assert!(run(&before, &after).changes.is_empty());

    after.nodes[2].paths.ssh.probe.failure_ratio = 0.2;
    let d = run(&before, &after);
    let c = only_change(&d);
    assert_eq!(c.what, What::FailureRatio);
    assert_eq!(
        (c.before.as_deref(), c.after.as_deref()),
        (Some("0.00"), Some("0.20"))
    );
    assert!(c.is_regression);
    assert!(
        d.verdict.contains("node-c: ssh failure ratio 0.00 -> 0.20"),
        "{}",
        d.verdict
    );

    assert!(
        !run(&after, &before).is_regression(),
        "a falling ratio is an improvement"
    );

    let loose = Thresholds {
        failure_ratio_delta: 0.25,
        ..Thresholds::default()
    };
    assert!(diff(&before, &after, &loose).changes.is_empty());
}

#[test]
fn p99_growth_needs_both_the_factor_and_the_floor() {
    let set = |p99: f64| {
        let mut r = nodes3();
        r.nodes[0].paths.ssh.probe.p99_ms = Some(p99);
        r
    };
    // 2 ms -> 6 ms is 3x but only 4 ms more: below the floor.
    assert!(run(&set(2.0), &set(6.0)).changes.is_empty());
    // 20 ms -> 29 ms is under 1.5x.
    assert!(run(&set(20.0), &set(29.0)).changes.is_empty());
    // 20 ms -> 31 ms is over 1.5x and 11 ms more.
    let d = run(&set(20.0), &set(31.0));
    let c = only_change(&d);
    assert_eq!((c.what, c.is_regression), (What::P99, true));
    assert_eq!(
        (c.before.as_deref(), c.after.as_deref()),
        (Some("20ms"), Some("31ms"))
    );
    // The other way round is an improvement.
    assert!(!run(&set(31.0), &set(20.0)).is_regression());

    let strict = Thresholds {
        p99_factor: 1.2,
        ..Thresholds::default()
    };
    assert!(diff(&set(20.0), &set(29.0), &strict).is_regression());
}

#[test]
fn reconnects_in_the_same_uptime_window_count_the_difference() {
    let (mut before, mut after) = (nodes3(), nodes3());
    before.nodes[0].paths.ssh.reconnects = 10;
    after.nodes[0].paths.ssh.reconnects = 13; // +3: at the threshold
    after.bridge.uptime_seconds = 7200;
    assert!(run(&before, &after).changes.is_empty());

    after.nodes[0].paths.ssh.reconnects = 14;
    let d = run(&before, &after);
    let c = only_change(&d);
    assert_eq!((c.what, c.is_regression), (What::Reconnects, true));
    assert_eq!(
        (c.before.as_deref(), c.after.as_deref()),
        (Some("10"), Some("14"))
    );
}

#[test]
fn after_a_restart_reconnects_are_judged_by_absolute_count() {
    let (mut before, mut after) = (nodes3(), nodes3());
    before.nodes[0].paths.ssh.reconnects = 50;
    after.bridge.uptime_seconds = 60; // restarted: counters reset
    after.nodes[0].paths.ssh.reconnects = 3;
    assert!(run(&before, &after).changes.is_empty());

    after.nodes[0].paths.ssh.reconnects = 4;
    assert!(run(&before, &after).is_regression());
}

#[test]
fn nodes_added_are_informational_and_removed_are_regressions() {
    let before = nodes3();
    let after = report(&["node-a", "node-b", "node-c", "node-d"]);
    let d = run(&before, &after);
    let c = only_change(&d);
    assert_eq!(
        (c.node.as_str(), c.what, c.is_regression),
        ("node-d", What::NodeAdded, false)
    );
    assert_eq!(d.nodes_compared, 4);

    let d = run(&after, &before);
    let c = only_change(&d);
    assert_eq!(
        (c.node.as_str(), c.what, c.is_regression),
        ("node-d", What::NodeRemoved, true)
    );
    assert_eq!(
        d.verdict,
        "REGRESSION: 1 of 4 nodes got worse (node-d: node removed)"
    );
}

#[test]
fn route_change_and_new_path_are_informational() {
    let before = nodes3();
    let mut after = nodes3();
    after.nodes[0].route = Route::Konnectivity;
    after.nodes[0].paths.konnectivity = Some(healthy_path());
    let d = run(&before, &after);
    assert!(!d.is_regression(), "{d:#?}");
    let whats: Vec<What> = d.changes.iter().map(|c| c.what).collect();
    assert_eq!(whats, [What::Route, What::PathAdded]);
    assert_eq!(d.changes[0].describe(), "route ssh -> konnectivity");
    assert_eq!(d.verdict, "OK: no regressions (2 informational changes)");

    // Losing the konnectivity path again is a regression.
    let d = run(&after, &before);
    assert!(d
        .changes
        .iter()
        .any(|c| c.what == What::PathRemoved && c.is_regression));
}

#[test]
fn konnectivity_path_is_compared_like_ssh() {
    let mut before = nodes3();
    before.nodes[1].paths.konnectivity = Some(healthy_path());
    let mut after = before.clone();
    after.nodes[1].paths.konnectivity.as_mut().unwrap().state = PathState::Degraded;
    let d = run(&before, &after);
    assert_eq!(only_change(&d).path.as_deref(), Some("konnectivity"));
    assert_eq!(
        d.verdict,
        "REGRESSION: 1 of 3 nodes got worse (node-b: konnectivity up -> degraded)"
    );
}

#[test]
fn verdict_lists_every_regressed_node() {
    let before = nodes3();
    let mut after = nodes3();
    after.nodes[0].paths.ssh.state = PathState::Down;
    after.nodes[0].paths.ssh.probe.failure_ratio = 1.0;
    after.nodes[2].paths.ssh.state = PathState::Unknown;
    let d = run(&before, &after);
    assert_eq!(d.regressed_nodes, ["node-a", "node-c"]);
    assert_eq!(
        d.verdict,
        "REGRESSION: 2 of 3 nodes got worse (node-a: ssh up -> down, ssh failure ratio 0.00 -> 1.00; \
         node-c: ssh up -> unknown)"
    );
}

#[test]
fn parking_ssh_after_finalize_is_not_a_regression_but_down_after_parked_is() {
    let before = nodes3();
    let mut parked = nodes3();
    parked.nodes[0].paths.ssh.state = PathState::Parked;
    let d = run(&before, &parked);
    let c = only_change(&d);
    assert_eq!(
        (c.before.as_deref(), c.after.as_deref()),
        (Some("up"), Some("parked"))
    );
    assert!(!c.is_regression, "{c:?}");
    let mut down = nodes3();
    down.nodes[0].paths.ssh.state = PathState::Down;
    assert!(run(&parked, &down).is_regression());
}
