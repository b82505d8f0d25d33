//! The per-path health state machine with hysteresis, and the rolling
//! window of recent probes. Pure: no I/O, no clocks of its own.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use super::PathState;

/// Probes kept for latency percentiles and the failure ratio.
pub const WINDOW: usize = 64;

/// One probe in the window.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ok: bool,
    latency: Duration,
}

/// State, counters and window of one path.
#[derive(Debug)]
pub(crate) struct Tracker {
    up_after: u32,
    down_after: u32,
    pub(crate) state: PathState,
    pub(crate) since: SystemTime,
    pub(crate) transport_up: bool,
    /// Whether the transport has ever been seen up: before that, a down
    /// transport is a bridge still starting, not yet a failure.
    ever_up: bool,
    pub(crate) consecutive_failures: u32,
    pub(crate) consecutive_successes: u32,
    pub(crate) probes_ok: u64,
    pub(crate) probes_failed: u64,
    pub(crate) last_error: Option<String>,
    /// The class of `last_error`: a probe error kind's label, or
    /// `transport` (set by the prober and by [`Tracker::transport`]).
    pub(crate) last_error_class: Option<&'static str>,
    pub(crate) last_probe: Option<SystemTime>,
    window: VecDeque<Sample>,
}

impl Tracker {
    /// `unknown`, with the transport assumed up until told otherwise.
    /// Thresholds below 1 are treated as 1.
    pub(crate) fn new(up_after: u32, down_after: u32, now: SystemTime) -> Self {
        Tracker {
            up_after: up_after.max(1),
            down_after: down_after.max(1),
            state: PathState::Unknown,
            since: now,
            transport_up: true,
            ever_up: false,
            consecutive_failures: 0,
            consecutive_successes: 0,
            probes_ok: 0,
            probes_failed: 0,
            last_error: None,
            last_error_class: None,
            last_probe: None,
            window: VecDeque::with_capacity(WINDOW),
        }
    }

    fn set(&mut self, state: PathState, now: SystemTime) -> Option<PathState> {
        if self.state == state {
            return None;
        }
        self.state = state;
        self.since = now;
        Some(state)
    }

    fn push(&mut self, sample: Sample, now: SystemTime) {
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(sample);
        self.last_probe = Some(now);
    }

    /// A probe succeeded. Returns the new state if it changed.
    pub(crate) fn success(&mut self, latency: Duration, now: SystemTime) -> Option<PathState> {
        self.push(Sample { ok: true, latency }, now);
        self.ever_up = true;
        self.probes_ok += 1;
        self.consecutive_failures = 0;
        self.consecutive_successes = self.consecutive_successes.saturating_add(1);
        if self.transport_up && self.consecutive_successes >= self.up_after {
            return self.set(PathState::Up, now);
        }
        None
    }

    /// A probe failed with `error` (already phrased for the user).
    pub(crate) fn failure(
        &mut self,
        latency: Duration,
        error: String,
        now: SystemTime,
    ) -> Option<PathState> {
        self.push(Sample { ok: false, latency }, now);
        self.probes_failed += 1;
        self.last_error = Some(error);
        self.consecutive_successes = 0;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if self.consecutive_failures >= self.down_after {
            self.set(PathState::Down, now)
        } else if self.state == PathState::Up {
            self.set(PathState::Degraded, now)
        } else {
            None
        }
    }

    /// The path's transport went down (`up == false`, with the reason) or
    /// came back. Down is immediate; coming back only allows probes to
    /// bring the path up again.
    pub(crate) fn transport(
        &mut self,
        up: bool,
        reason: impl FnOnce() -> String,
        now: SystemTime,
    ) -> Option<PathState> {
        self.transport_up = up;
        if up {
            self.ever_up = true;
            return None;
        }
        self.consecutive_successes = 0;
        if self.state == PathState::Unknown && !self.ever_up {
            // Still starting (the SSH session or the agent is not there
            // yet): `unknown` for `down_after` checks, then `down`.
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if self.consecutive_failures < self.down_after {
                return None;
            }
            self.last_error = Some(reason());
            self.last_error_class = Some("transport");
            return self.set(PathState::Down, now);
        }
        if self.state != PathState::Down || self.last_error.is_none() {
            self.last_error = Some(reason());
            self.last_error_class = Some("transport");
        }
        self.set(PathState::Down, now)
    }

    /// Without an HTTPS probe the state is the transport's: up or down.
    pub(crate) fn follow_transport(
        &mut self,
        up: bool,
        reason: impl FnOnce() -> String,
        now: SystemTime,
    ) -> Option<PathState> {
        self.transport_up = up;
        if up {
            self.set(PathState::Up, now)
        } else {
            self.transport(false, reason, now)
        }
    }

    /// Latency percentile `p` (0..=1) in milliseconds over the successful
    /// probes of the window (nearest rank); `None` before the first success.
    pub(crate) fn latency_ms(&self, p: f64) -> Option<f64> {
        let mut ok: Vec<Duration> = self
            .window
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.latency)
            .collect();
        if ok.is_empty() {
            return None;
        }
        ok.sort_unstable();
        let rank = ((p * ok.len() as f64).ceil() as usize).clamp(1, ok.len());
        Some(ok[rank - 1].as_secs_f64() * 1000.0)
    }

    /// `(failures, size)` of the window.
    pub(crate) fn window_failures(&self) -> (u32, u32) {
        let failed = self.window.iter().filter(|s| !s.ok).count();
        (failed as u32, self.window.len() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn hysteresis_up_degraded_down_up() {
        let mut t = Tracker::new(2, 3, now());
        assert_eq!(t.state, PathState::Unknown);
        assert_eq!(
            t.success(MS, now()),
            None,
            "one success is not enough with up_after = 2"
        );
        assert_eq!(t.success(MS, now()), Some(PathState::Up));
        assert_eq!(t.failure(MS, "e1".into(), now()), Some(PathState::Degraded));
        assert_eq!(t.failure(MS, "e2".into(), now()), None);
        assert_eq!(t.failure(MS, "e3".into(), now()), Some(PathState::Down));
        assert_eq!(t.consecutive_failures, 3);
        assert_eq!(t.last_error.as_deref(), Some("e3"));
        assert_eq!(t.success(MS, now()), None);
        assert_eq!(t.success(MS, now()), Some(PathState::Up));
        assert_eq!((t.probes_ok, t.probes_failed), (4, 3));
    }

    #[test]
    fn a_success_between_failures_restarts_the_count_to_down() {
        let mut t = Tracker::new(1, 2, now());
        t.success(MS, now());
        t.failure(MS, "e".into(), now());
        t.success(MS, now());
        assert_eq!(t.state, PathState::Up);
        t.failure(MS, "e".into(), now());
        assert_eq!(
            t.state,
            PathState::Degraded,
            "one failure after a success must not mean down"
        );
    }

    #[test]
    fn transport_loss_is_down_at_once_and_blocks_up_until_it_returns() {
        let mut t = Tracker::new(1, 5, now());
        t.success(MS, now());
        assert_eq!(t.state, PathState::Up);
        assert_eq!(
            t.transport(false, || "gone".into(), now()),
            Some(PathState::Down)
        );
        assert_eq!(t.last_error.as_deref(), Some("gone"));
        assert_eq!(
            t.success(MS, now()),
            None,
            "no up while the transport is down"
        );
        t.transport(true, || unreachable!(), now());
        assert_eq!(t.state, PathState::Down);
        assert_eq!(t.success(MS, now()), Some(PathState::Up));
    }

    #[test]
    fn window_keeps_the_last_64_and_percentiles_use_successes() {
        let mut t = Tracker::new(1, 100, now());
        for i in 1..=100u64 {
            t.success(Duration::from_millis(i), now());
        }
        // Only probes 37..=100 remain.
        assert_eq!(t.latency_ms(0.5), Some(68.0));
        assert_eq!(t.latency_ms(0.99), Some(100.0));
        t.failure(Duration::from_secs(5), "slow".into(), now());
        assert_eq!(t.window_failures(), (1, 64));
        assert_eq!(
            t.latency_ms(0.99),
            Some(100.0),
            "a timed-out probe is a failure, not a latency"
        );
    }
}
