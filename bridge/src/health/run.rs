//! The prober task: ticks, liveness changes, one probe at a time, and
//! publishing state changes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::probe::{self, ProbeError, ProbeFailure};
use super::state::Tracker;
use super::{PathState, ProbeDial, ProbeSettings, Shared};
use crate::path::Liveness;
use sshbridge_core::PathKind;

/// The prober task's own state.
pub(super) struct Run {
    pub(super) shared: Arc<Shared>,
    pub(super) settings: ProbeSettings,
    pub(super) liveness: Liveness,
    /// False once the liveness sender is gone (then `changed()` would
    /// return at once forever, so it is no longer polled).
    pub(super) liveness_open: bool,
}

impl Run {
    pub(super) async fn run<D: ProbeDial>(
        mut self,
        dialer: D,
        phase: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval_at(Instant::now() + phase, self.settings.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                open = self.liveness.changed(), if self.liveness_open => {
                    self.on_liveness(open);
                }
                _ = ticker.tick() => {
                    if !self.tick(&dialer, &shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    fn transport_up(&self) -> bool {
        self.liveness_open && self.liveness.is_up()
    }

    /// Applies a liveness change (`open == false`: the sender is gone).
    fn on_liveness(&mut self, open: bool) {
        self.liveness_open &= open;
        let up = self.transport_up();
        self.update(|t, reason| {
            if t.probing_disabled {
                t.tracker.follow_transport(up, reason, SystemTime::now())
            } else {
                t.tracker.transport(up, reason, SystemTime::now())
            }
        });
    }

    /// One tick: check the transport, then probe. False on shutdown.
    async fn tick<D: ProbeDial>(&mut self, dialer: &D, shutdown: &CancellationToken) -> bool {
        let up = self.transport_up();
        let Some(tls) = self.settings.tls.clone().filter(|_| up) else {
            self.update(|t, reason| {
                if t.probing_disabled {
                    t.tracker.follow_transport(up, reason, SystemTime::now())
                } else {
                    t.tracker.transport(false, reason, SystemTime::now())
                }
            });
            return true;
        };
        let s = &self.shared;
        let (address, port) = (s.target.ip(), s.target.port());
        let started = Instant::now();
        let (timeout, kubelet_path) = (self.settings.timeout, self.settings.kubelet_path.clone());
        // Boxed: a TLS + HTTP probe's state inline would size this task
        // (one per node and path) by it between probes too, ~6 KiB a node.
        let mut probe = Box::pin(tokio::time::timeout(
            timeout,
            probe::probe_once(dialer, address, port, &kubelet_path, tls),
        ));
        let result = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return false,
                open = self.liveness.changed(), if self.liveness_open => {
                    self.on_liveness(open);
                    if !self.transport_up() {
                        // The transport's loss already set `down`; this
                        // probe's outcome would say nothing new.
                        return true;
                    }
                }
                r = &mut probe => break r.unwrap_or(Err(ProbeError::Timeout(timeout))),
            }
        };
        self.record(started.elapsed(), result);
        true
    }

    fn record(&mut self, elapsed: Duration, result: Result<(), ProbeError>) {
        if let Some(e) = &self.settings.events {
            e.probed(
                elapsed,
                result.as_ref().map(|_| ()).map_err(ProbeError::kind),
            );
        }
        let failure = result.err().map(|error| {
            let s = &self.shared;
            ProbeFailure {
                node: s.node.clone(),
                target: s.target,
                path: s.path,
                error,
            }
        });
        if let Some(f) = &failure {
            tracing::debug!(node = %f.node, path = %f.path, error = %f, "health probe failed");
        }
        self.update(move |t, _| match failure {
            None => t.tracker.success(elapsed, SystemTime::now()),
            Some(f) => {
                let class = f.error.kind().as_str();
                let changed = t.tracker.failure(elapsed, f.to_string(), SystemTime::now());
                t.tracker.last_error_class = Some(class);
                changed
            }
        });
    }

    /// Runs `f` on the tracker under the lock, then publishes a state change.
    fn update(&self, f: impl FnOnce(&mut Locked<'_>, &dyn Fn() -> String) -> Option<PathState>) {
        let s = &self.shared;
        let reason = || {
            let why = match s.path {
                PathKind::Konnectivity => {
                    "no Konnectivity agent is connected for the node (is its agent running?)"
                }
                PathKind::Ssh => "its SSH session is not up (the tunnel's last error says why)",
            };
            format!(
                "node {} ({}): path {} is down: {why}",
                s.node, s.target, s.path
            )
        };
        let changed = {
            let mut tracker = s.tracker.lock().unwrap_or_else(|p| p.into_inner());
            let mut locked = Locked {
                tracker: &mut tracker,
                probing_disabled: !s.probing,
            };
            f(&mut locked, &reason)
        };
        if let Some(state) = changed {
            tracing::info!(node = %s.node, path = %s.path, %state, "path health changed");
            if let Some(e) = &self.settings.events {
                e.state_changed(state);
            }
            s.state.send_replace(state);
        }
    }
}

/// The tracker under its lock, with what the update needs to know.
struct Locked<'a> {
    tracker: &'a mut Tracker,
    probing_disabled: bool,
}
