//! Per-node and per-path handles: what the daemon, the tunnel's event hook
//! and the prober count into, as events happen. The methods touch only
//! atomics.

use std::time::Duration;

use sshbridge_core::metrics::{Counter, Gauge, Histogram};

use super::families::Families;
use super::labels::*;
use super::metered::Metered;
use crate::health::{HealthEvents, PathState, ProbeErrorKind};
use crate::konnectivity::events::{Limit, NodeEvents};
use crate::path::BoxStream;
use crate::ssh::{HandshakeFailureKind, TunnelEvents};

/// One node's SSH-session counters; the tunnel publishes into them
/// ([`TunnelEvents`]).
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    handshakes: Counter,
    /// In [`Handshake::ALL`] order.
    handshake_failures: [Counter; 5],
    host_key_mismatches: Counter,
    reconnects: Counter,
    stream_compactions: Counter,
    /// In [`KonnLimit::ALL`] order.
    konn_limit_hits: [Counter; 4],
}

impl NodeMetrics {
    pub(super) fn new(f: &Families, node: &str) -> NodeMetrics {
        let n = || NodeL { node: node.into() };
        NodeMetrics {
            handshakes: f.handshakes.get_or_create(&n()).clone(),
            handshake_failures: Handshake::ALL.map(|k| {
                let l = HandshakeL {
                    node: node.into(),
                    reason: Handshake(k),
                };
                f.handshake_failures.get_or_create(&l).clone()
            }),
            host_key_mismatches: f.host_key_mismatches.get_or_create(&n()).clone(),
            reconnects: f.reconnects.get_or_create(&n()).clone(),
            stream_compactions: f.stream_compactions.get_or_create(&n()).clone(),
            konn_limit_hits: KonnLimit::ALL.map(|limit| {
                let l = LimitL {
                    node: node.into(),
                    limit,
                };
                f.konn_limit_hits.get_or_create(&l).clone()
            }),
        }
    }

    pub(super) fn remove(f: &Families, node: &str) {
        let n = NodeL { node: node.into() };
        f.handshakes.remove(&n);
        f.host_key_mismatches.remove(&n);
        f.reconnects.remove(&n);
        f.stream_compactions.remove(&n);
        for k in Handshake::ALL {
            f.handshake_failures.remove(&HandshakeL {
                node: node.into(),
                reason: Handshake(k),
            });
        }
        for limit in KonnLimit::ALL {
            f.konn_limit_hits.remove(&LimitL {
                node: node.into(),
                limit,
            });
        }
    }
}

/// The node's Konnectivity limit hits, counted as the hub reports them.
impl NodeEvents for NodeMetrics {
    fn limit_hit(&self, limit: Limit) {
        let limit = match limit {
            Limit::StallBudget => KonnLimit::StallBudget,
            Limit::CreditViolation => KonnLimit::CreditViolation,
            Limit::HalfCloseIdle => KonnLimit::HalfCloseIdle,
            Limit::ConnectionCap => KonnLimit::ConnectionCap,
        };
        if let Some(i) = KonnLimit::ALL.iter().position(|l| *l == limit) {
            self.konn_limit_hits[i].inc();
        }
    }
}

impl TunnelEvents for NodeMetrics {
    fn session_up(&self) {
        self.handshakes.inc();
    }

    fn session_lost(&self) {
        self.reconnects.inc();
    }

    fn handshake_failed(&self, kind: HandshakeFailureKind) {
        self.handshakes.inc();
        if let Some(i) = Handshake::ALL.iter().position(|k| *k == kind) {
            self.handshake_failures[i].inc();
        }
    }

    fn host_key_mismatch(&self) {
        self.host_key_mismatches.inc();
    }

    fn stream_compacted(&self) {
        self.stream_compactions.inc();
    }
}

/// One node's path: dials, streams, bytes, probes and health state.
#[derive(Debug, Clone)]
pub struct PathMetrics {
    transport_up: Gauge,
    dial_duration: Histogram,
    /// Dials that succeeded (the histogram's count is not readable).
    dials_ok: Counter,
    /// In [`DialFailure::ALL`] order.
    dial_failures: [Counter; 4],
    streams_active: Gauge,
    bytes_sent: Counter,
    bytes_received: Counter,
    probe_duration: Histogram,
    /// In [`ProbeResult::all`] order.
    probes: Vec<Counter>,
    /// In [`PathState::ALL`] order.
    state: [Gauge; PathState::ALL.len()],
}

impl PathMetrics {
    pub(super) fn new(f: &Families, node: &str, path: PathLabel) -> PathMetrics {
        let p = || PathL {
            node: node.into(),
            path,
        };
        PathMetrics {
            transport_up: f.tunnel_up.get_or_create(&p()).clone(),
            dial_duration: f.dial_duration.get_or_create(&p()).clone(),
            dials_ok: f.dials_ok.get_or_create(&p()).clone(),
            dial_failures: DialFailure::ALL.map(|reason| {
                let l = DialL {
                    node: node.into(),
                    path,
                    reason,
                };
                f.dial_failures.get_or_create(&l).clone()
            }),
            streams_active: f.streams_active.get_or_create(&p()).clone(),
            bytes_sent: f.bytes_sent.get_or_create(&p()).clone(),
            bytes_received: f.bytes_received.get_or_create(&p()).clone(),
            probe_duration: f.probe_duration.get_or_create(&p()).clone(),
            probes: ProbeResult::all()
                .map(|result| {
                    let l = ProbeL {
                        node: node.into(),
                        path,
                        result,
                    };
                    f.probes.get_or_create(&l).clone()
                })
                .collect(),
            state: PathState::ALL.map(|state| {
                let l = PathStateL {
                    node: node.into(),
                    path,
                    state,
                };
                f.path_state.get_or_create(&l).clone()
            }),
        }
    }

    pub(super) fn remove(f: &Families, node: &str, path: PathLabel) {
        let p = PathL {
            node: node.into(),
            path,
        };
        f.tunnel_up.remove(&p);
        f.dial_duration.remove(&p);
        f.dials_ok.remove(&p);
        f.streams_active.remove(&p);
        f.bytes_sent.remove(&p);
        f.bytes_received.remove(&p);
        f.probe_duration.remove(&p);
        for reason in DialFailure::ALL {
            let node = node.into();
            f.dial_failures.remove(&DialL { node, path, reason });
        }
        for result in ProbeResult::all() {
            let node = node.into();
            f.probes.remove(&ProbeL { node, path, result });
        }
        for state in PathState::ALL {
            let node = node.into();
            f.path_state.remove(&PathStateL { node, path, state });
        }
    }

    /// Records one dial: its duration, and its failure reason if it failed.
    pub fn observe_dial(&self, elapsed: Duration, outcome: Result<(), DialFailure>) {
        self.dial_duration.observe(elapsed.as_secs_f64());
        match outcome {
            Ok(()) => {
                self.dials_ok.inc();
            }
            Err(f) => {
                if let Some(i) = DialFailure::ALL.iter().position(|a| *a == f) {
                    self.dial_failures[i].inc();
                }
            }
        }
    }

    /// Dials so far: how many succeeded, and the failures by reason
    /// (reasons with a count of zero left out), so reports and metrics agree.
    pub fn dial_counts(&self) -> (u64, Vec<(&'static str, u64)>) {
        let failures = DialFailure::ALL
            .iter()
            .zip(&self.dial_failures)
            .map(|(f, c)| (f.as_str(), c.get()))
            .filter(|(_, n)| *n > 0)
            .collect();
        (self.dials_ok.get(), failures)
    }

    /// A dialed stream that counts itself in `sshbridge_streams_active`
    /// while open and its bytes as they pass.
    pub fn meter(&self, stream: BoxStream) -> BoxStream {
        Box::new(Metered::new(
            stream,
            self.streams_active.clone(),
            self.bytes_sent.clone(),
            self.bytes_received.clone(),
        ))
    }

    /// Sets `sshbridge_tunnel_up` for this path.
    pub fn set_transport_up(&self, up: bool) {
        self.transport_up.set(i64::from(up));
    }

    /// Records one health probe.
    pub fn observe_probe(&self, elapsed: Duration, outcome: Result<(), ProbeErrorKind>) {
        self.probe_duration.observe(elapsed.as_secs_f64());
        let result = match outcome {
            Ok(()) => ProbeResult::Ok,
            Err(k) => ProbeResult::Failed(k),
        };
        if let Some(i) = ProbeResult::all().position(|r| r == result) {
            self.probes[i].inc();
        }
    }

    /// Sets `sshbridge_path_state`: 1 for `state`, 0 for the others.
    pub fn set_state(&self, state: PathState) {
        for (s, g) in PathState::ALL.iter().zip(&self.state) {
            g.set(i64::from(*s == state));
        }
    }
}

impl HealthEvents for PathMetrics {
    fn probed(&self, elapsed: Duration, outcome: Result<(), ProbeErrorKind>) {
        self.observe_probe(elapsed, outcome);
    }

    fn state_changed(&self, state: PathState) {
        self.set_state(state);
    }
}
