//! Registry and bridge metric set: rendering, cumulativity, and the real
//! `promtool check metrics` on a populated registry.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;
use crate::health::{PathState, ProbeErrorKind};
use crate::ssh::{HandshakeFailures, TunnelState, TunnelStats};

const LAT: Desc<1> = Desc {
    name: "test_latency_seconds",
    help: "Test latency.",
    labels: ["node"],
};

#[test]
fn histogram_buckets_are_cumulative_and_inf_equals_count() {
    static BOUNDS: &[f64] = &[0.1, 0.5, 1.0];
    let h = Histogram::new(BOUNDS);
    for v in [0.05, 0.1, 0.3, 0.7, 0.9, 2.0, 30.0] {
        h.observe(v);
    }
    let s = h.snapshot();
    assert_eq!(
        s.buckets,
        vec![(0.1, 2), (0.5, 3), (1.0, 5), (f64::INFINITY, 7)],
        "a value equal to a bound belongs to that bucket; every bucket includes the ones below"
    );
    assert_eq!(s.count, 7);
    assert!((s.sum - 34.05).abs() < 1e-9, "{}", s.sum);
}

#[test]
fn render_sorts_families_and_series_and_escapes_values() {
    let r = Registry::new();
    static BOUNDS: &[f64] = &[0.5];
    r.histogram(&LAT, BOUNDS, ["b\"\\\n"]).observe(0.25);
    let g = Desc {
        name: "test_a",
        help: "First \\ family\nsecond line.",
        labels: ["node"],
    };
    r.gauge(&g, ["z"]).set(2.5);
    r.gauge(&g, ["a"]).set(-1.0);
    let text = r.render();
    let want = "# HELP test_a First \\\\ family\\nsecond line.\n# TYPE test_a gauge\n\
                test_a{node=\"a\"} -1\ntest_a{node=\"z\"} 2.5\n\
                # HELP test_latency_seconds Test latency.\n# TYPE test_latency_seconds histogram\n\
                test_latency_seconds_bucket{node=\"b\\\"\\\\\\n\",le=\"0.5\"} 1\n\
                test_latency_seconds_bucket{node=\"b\\\"\\\\\\n\",le=\"+Inf\"} 1\n\
                test_latency_seconds_sum{node=\"b\\\"\\\\\\n\"} 0.25\n\
                test_latency_seconds_count{node=\"b\\\"\\\\\\n\"} 1\n";
    assert_eq!(text, want);
}

#[test]
fn counters_mirroring_snapshots_never_go_backwards() {
    let c = Counter::default();
    c.set_at_least(10);
    c.set_at_least(4);
    c.inc();
    assert_eq!(c.get(), 11);
}

fn stats(state: TunnelState) -> TunnelStats {
    TunnelStats {
        state,
        reconnects: 2,
        handshake_failures: HandshakeFailures {
            auth: 1,
            host_key: 3,
            ..Default::default()
        },
        open_streams: 4,
        bytes_sent: 1000,
        bytes_received: 5000,
        streams_reset: 0,
        stream_compactions: 0,
        last_error: None,
        up_since: None,
    }
}

/// A registry populated the way the daemon does it: two nodes, both
/// paths, dials, probes, tunnel stats.
fn populated() -> BridgeMetrics {
    let m = BridgeMetrics::new(env!("CARGO_PKG_VERSION"));
    m.set_tunnel_states([TunnelState::Up, TunnelState::Up, TunnelState::Backoff]);
    m.dial_forbidden();
    m.set_agents_cut_for_control_backlog(2);
    for node in ["node-a", "node-\"b\""] {
        let n = m.node(node);
        n.update_from_tunnel(&stats(TunnelState::Up));
        n.host_key_mismatch();
        n.update_konnectivity_limits(&crate::konnectivity::Stats {
            overflow_closes: 2,
            credit_violations: 1,
            half_close_idle_closes: 3,
            dials_over_connection_cap: 4,
            ..Default::default()
        });
        for path in ["ssh", "konnectivity"] {
            let p = m.path(node, path);
            p.update_from_tunnel(&stats(TunnelState::Up));
            p.observe_dial(Duration::from_millis(3), Ok(()));
            p.observe_dial(Duration::from_secs(10), Err(DialFailure::Timeout));
            p.observe_probe(Duration::from_millis(12), Ok(()));
            p.observe_probe(Duration::from_secs(5), Err(ProbeErrorKind::Timeout));
            p.set_state(PathState::Degraded);
        }
    }
    m
}

#[test]
fn bridge_metrics_reflect_what_the_daemon_recorded() {
    let m = populated();
    let text = m.render();
    for line in [
        format!(
            "sshbridge_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "sshbridge_tunnels{state=\"up\"} 2".into(),
        "sshbridge_tunnels{state=\"backoff\"} 1".into(),
        "sshbridge_tunnels{state=\"draining\"} 0".into(),
        "sshbridge_dial_failures_total{node=\"\",path=\"\",reason=\"forbidden\"} 1".into(),
        "sshbridge_dial_failures_total{node=\"node-a\",path=\"ssh\",reason=\"timeout\"} 1".into(),
        "sshbridge_handshake_failures_total{node=\"node-a\",reason=\"host_key\"} 3".into(),
        // 2 lost sessions + the current one + 4 failed attempts.
        "sshbridge_handshakes_total{node=\"node-a\"} 7".into(),
        "sshbridge_streams_active{node=\"node-a\",path=\"ssh\"} 4".into(),
        "sshbridge_bytes_received_total{node=\"node-a\",path=\"ssh\"} 5000".into(),
        "sshbridge_dial_duration_seconds_bucket{node=\"node-a\",path=\"ssh\",le=\"0.005\"} 1"
            .into(),
        "sshbridge_dial_duration_seconds_bucket{node=\"node-a\",path=\"ssh\",le=\"+Inf\"} 2".into(),
        "sshbridge_path_state{node=\"node-a\",path=\"ssh\",state=\"degraded\"} 1".into(),
        "sshbridge_path_state{node=\"node-a\",path=\"ssh\",state=\"up\"} 0".into(),
        "sshbridge_konnectivity_agents_disconnected_total{reason=\"control_backlog\"} 2".into(),
        "sshbridge_konnectivity_limit_hits_total{node=\"node-a\",limit=\"stall_budget\"} 2".into(),
        "sshbridge_konnectivity_limit_hits_total{node=\"node-a\",limit=\"credit_violation\"} 1"
            .into(),
        "sshbridge_konnectivity_limit_hits_total{node=\"node-a\",limit=\"half_close_idle\"} 3"
            .into(),
        "sshbridge_konnectivity_limit_hits_total{node=\"node-a\",limit=\"connection_cap\"} 4"
            .into(),
        "sshbridge_probes_total{node=\"node-\\\"b\\\"\",path=\"konnectivity\",result=\"ok\"} 1"
            .into(),
    ] {
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
    m.remove_node("node-a");
    let text = m.render();
    assert!(
        !text.contains("node=\"node-a\""),
        "a removed node leaves no series"
    );
    assert!(text.contains("node=\"node-\\\"b\\\"\""));
}

#[test]
fn promtool_accepts_the_exposition_without_lint_problems() {
    let text = populated().render();
    let mut child = Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) must be installed at /usr/bin/promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {:?}\n{said}\n---\n{text}",
        out.status
    );
}

/// Every tunnel state is counted, a stopped one included (it used to index
/// past a five-slot array and panic the `/metrics` handler).
#[test]
fn every_tunnel_state_is_counted_stopped_included() {
    let m = BridgeMetrics::new("test");
    m.set_tunnel_states([
        TunnelState::Connecting,
        TunnelState::Up,
        TunnelState::Backoff,
        TunnelState::Draining,
        TunnelState::Parked,
        TunnelState::Stopped,
        TunnelState::Stopped,
    ]);
    let text = m.render();
    for (state, n) in [
        ("connecting", 1),
        ("up", 1),
        ("backoff", 1),
        ("draining", 1),
        ("parked", 1),
        ("stopped", 2),
    ] {
        let line = format!("sshbridge_tunnels{{state=\"{state}\"}} {n}");
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
}
