//! The bridge metric set: what the daemon's events record, removal of a
//! node's series, and the real `promtool check metrics` on a populated set.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;
use crate::health::{PathState, ProbeErrorKind};
use crate::konnectivity::events::{HubEvents, Limit, NodeEvents};
use crate::ssh::{HandshakeFailureKind, TunnelEvents, TunnelState};

/// A registry populated the way the daemon does it: two nodes, both
/// paths, dials, streams, probes, tunnel events.
fn populated() -> BridgeMetrics {
    let m = BridgeMetrics::new(env!("CARGO_PKG_VERSION"));
    m.set_tunnel_states([TunnelState::Up, TunnelState::Up, TunnelState::Backoff]);
    m.dial_forbidden();
    let hub: &dyn HubEvents = &m;
    hub.agent_cut_for_control_backlog();
    hub.agent_cut_for_control_backlog();
    for node in ["node-a", "node-\"b\""] {
        let n = m.node(node);
        // 2 lost sessions and the current one; 1 auth and 3 host key failures.
        for _ in 0..3 {
            n.session_up();
        }
        n.session_lost();
        n.session_lost();
        n.handshake_failed(HandshakeFailureKind::Auth);
        for _ in 0..3 {
            n.handshake_failed(HandshakeFailureKind::HostKey);
        }
        n.host_key_mismatch();
        for (limit, hits) in [
            (Limit::StallBudget, 2),
            (Limit::CreditViolation, 1),
            (Limit::HalfCloseIdle, 3),
            (Limit::ConnectionCap, 4),
        ] {
            for _ in 0..hits {
                n.limit_hit(limit);
            }
        }
        for path in ["ssh", "konnectivity"] {
            let p = m.path(node, path);
            p.set_transport_up(true);
            // Two streams stay open, one closed: 2 active.
            let (mut near, far) = tokio::io::duplex(64);
            let kept = p.meter(Box::new(tokio::io::empty()));
            drop(p.meter(Box::new(tokio::io::empty())));
            let mut stream = p.meter(Box::new(far));
            pump_bytes(&mut stream, &mut near);
            std::mem::forget((kept, stream, near));
            p.observe_dial(Duration::from_millis(3), Ok(()));
            p.observe_dial(Duration::from_secs(10), Err(DialFailure::Timeout));
            let events: &dyn crate::health::HealthEvents = &p;
            events.probed(Duration::from_millis(12), Ok(()));
            events.probed(Duration::from_secs(5), Err(ProbeErrorKind::Timeout));
            events.state_changed(PathState::Degraded);
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
        "sshbridge_streams_active{node=\"node-a\",path=\"ssh\"} 2".into(),
        "sshbridge_bytes_sent_total{node=\"node-a\",path=\"ssh\"} 10".into(),
        "sshbridge_bytes_received_total{node=\"node-a\",path=\"ssh\"} 7".into(),
        "sshbridge_host_key_mismatches_total{node=\"node-a\"} 1".into(),
        "sshbridge_reconnects_total{node=\"node-a\"} 2".into(),
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
    let p = m.path("node-a", "ssh");
    assert_eq!(p.dial_counts(), (1, vec![("timeout", 1)]));
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

/// Writes 10 bytes through `stream` and reads 7 back from `near`, polling
/// by hand (the metered stream counts as bytes pass, not on a runtime).
fn pump_bytes(stream: &mut crate::path::BoxStream, near: &mut tokio::io::DuplexStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        stream.write_all(&[1; 10]).await.unwrap();
        near.write_all(&[2; 7]).await.unwrap();
        let mut got = [0; 7];
        stream.read_exact(&mut got).await.unwrap();
        let mut sent = [0; 10];
        near.read_exact(&mut sent).await.unwrap();
    });
}
