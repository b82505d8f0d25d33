//! What a node tells the outside: its `/report` part, the migration's live
//! counters and its metrics.

use sshbridge_core::PathKind;
use sshbridge_migrate::LiveCounters;

use super::{NodeEntry, PathEntry};
use crate::health::PathState;
use crate::report::{rfc3339, DialStats, NodeReport, PathReport, Paths, ProbeStats};

impl NodeEntry {
    /// Live counters of a path for the migration's soak watch.
    pub(in crate::daemon) fn live(&self, kind: PathKind) -> LiveCounters {
        let Some(p) = self.paths.get(&kind) else {
            return LiveCounters::default();
        };
        let (dials_ok, failed) = p.metrics.dial_counts();
        let health = p.prober.snapshot();
        LiveCounters {
            dials_ok,
            dials_failed: failed.iter().map(|(_, n)| n).sum(),
            probes_ok: health.probes_ok,
            probes_failed: health.probes_failed,
            last_error: health.last_error,
        }
    }

    /// Brings the node's metrics up to date with its paths' counters.
    pub(in crate::daemon) fn refresh_metrics(&self) {
        if let Some(ssh) = self.paths.get(&PathKind::Ssh) {
            ssh.metrics.set_transport_up(ssh.path.is_up());
            if ssh.path.parked() {
                ssh.metrics.set_state(PathState::Parked);
            }
        }
        if let Some(p) = self.paths.get(&PathKind::Konnectivity) {
            p.metrics.set_transport_up(p.path.is_up());
        }
    }

    /// The node's part of `/report`.
    pub(in crate::daemon) fn report(&self) -> NodeReport {
        let mut paths = self
            .paths
            .iter()
            .map(|(kind, p)| (*kind, path_report(p)))
            .collect::<std::collections::BTreeMap<_, _>>();
        NodeReport {
            name: self.spec.name.clone(),
            address: self.spec.address.to_string(),
            route: self.route(),
            paths: Paths {
                ssh: paths.remove(&PathKind::Ssh).unwrap_or_default(),
                konnectivity: paths.remove(&PathKind::Konnectivity),
            },
        }
    }
}

/// One path's report: its prober's view, completed by the path's counters.
fn path_report(p: &PathEntry) -> PathReport {
    let stats = p.path.stats();
    let mut report = probe_report(p);
    // While the transport is down, the path's own error (refused, host
    // key, timeout...) says more than "transport not up".
    report.last_error = if p.path.is_up() {
        report.last_error.or(stats.last_error)
    } else {
        stats.last_error.or(report.last_error)
    };
    if p.path.parked() {
        report.state = PathState::Parked;
        report.last_error = None;
    }
    PathReport {
        reconnects: stats.reconnects,
        open_streams: stats.open_streams,
        bytes_sent: stats.bytes_sent,
        bytes_received: stats.bytes_received,
        flow_control: stats.flow_control,
        agents: stats.agents,
        ..report
    }
}

/// Probe-derived part of a path's report.
fn probe_report(p: &PathEntry) -> PathReport {
    let health = p.prober.snapshot();
    let (ok, failed) = p.metrics.dial_counts();
    let window = health.window_size;
    PathReport {
        state: health.state,
        since: Some(rfc3339(health.since)),
        last_error: health.last_error,
        probe: ProbeStats {
            p50_ms: health.latency_p50_ms,
            p99_ms: health.latency_p99_ms,
            window,
            failures_in_window: health.window_failures,
            failure_ratio: if window == 0 {
                0.0
            } else {
                f64::from(health.window_failures) / f64::from(window)
            },
        },
        consecutive_failures: health.consecutive_failures,
        dials: DialStats {
            ok,
            failed: failed
                .into_iter()
                .map(|(reason, n)| (reason.to_string(), n))
                .collect(),
        },
        ..PathReport::default()
    }
}
