//! Jittered exponential backoff between reconnect attempts.
//!
//! One type for every reconnecting loop in the bridge. The delay grows from
//! `initial` by `multiplier` per failed attempt up to `max`; each delay is
//! spread by `± jitter` so that nodes that fell over together do not come
//! back in lockstep. A connection that stayed healthy for [`Backoff::stable_after`]
//! resets the sequence, so one blip after a long healthy run retries fast.

use std::time::Duration;

use rand::{Rng, SeedableRng};

/// Reconnect delays from a `sshbridge_config::Backoff`.
#[derive(Debug)]
pub struct Backoff {
    cfg: sshbridge_config::Backoff,
    attempt: u32,
    rng: rand::rngs::StdRng,
}

impl Backoff {
    /// A fresh sequence (the next delay is about `initial`).
    pub fn new(cfg: &sshbridge_config::Backoff) -> Backoff {
        Backoff {
            cfg: cfg.clone(),
            attempt: 0,
            rng: rand::rngs::StdRng::from_entropy(),
        }
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// How long a connection must stay up to count as healthy and reset the
    /// sequence: the longest delay, `max`.
    pub fn stable_after(&self) -> Duration {
        self.cfg.max
    }

    /// Start over from `initial`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Reset when a connection that just ended had been up for `up_for`
    /// or longer than [`Backoff::stable_after`]. Returns whether it reset.
    pub fn reset_if_stable(&mut self, up_for: Duration) -> bool {
        let stable = up_for >= self.stable_after();
        if stable {
            self.reset();
        }
        stable
    }

    /// The delay before the next attempt; counts one more failed attempt.
    pub fn next_delay(&mut self) -> Duration {
        let max = self.cfg.max.as_secs_f64();
        let grown = self.cfg.initial.as_secs_f64()
            * self
                .cfg
                .multiplier
                .max(1.0)
                .powi(self.attempt.min(64) as i32);
        let base = grown.min(max);
        let jitter = self.cfg.jitter.clamp(0.0, 1.0);
        let spread = if jitter > 0.0 {
            self.rng.gen_range(-jitter..=jitter)
        } else {
            0.0
        };
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_secs_f64((base * (1.0 + spread)).clamp(0.0, max))
    }

    /// Sleep for [`Backoff::next_delay`] (on `tokio::time`).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(jitter: f64) -> sshbridge_config::Backoff {
        sshbridge_config::Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn grows_exponentially_to_the_cap_without_jitter() {
        let mut b = Backoff::new(&cfg(0.0));
        let got: Vec<u64> = (0..9).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(
            got,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(b.attempts(), 9);
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut b = Backoff::new(&cfg(0.2));
            let d = b.next_delay().as_millis() as u64;
            assert!(
                (400..=600).contains(&d),
                "first delay {d}ms outside 500ms±20%"
            );
            seen.insert(d);
            for _ in 0..10 {
                let d = b.next_delay();
                assert!(d <= Duration::from_secs(30), "delay {d:?} above max");
            }
        }
        assert!(
            seen.len() > 10,
            "jitter produced almost no spread: {seen:?}"
        );
    }

    #[test]
    fn stable_connection_resets_but_a_short_one_does_not() {
        let mut b = Backoff::new(&cfg(0.0));
        for _ in 0..5 {
            b.next_delay();
        }
        assert!(!b.reset_if_stable(Duration::from_secs(29)));
        assert_eq!(b.next_delay(), Duration::from_secs(16));
        assert!(b.reset_if_stable(Duration::from_secs(30)));
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    #[tokio::test]
    async fn wait_sleeps_on_tokio_time() {
        tokio::time::pause();
        let mut b = Backoff::new(&cfg(0.0));
        let t0 = tokio::time::Instant::now();
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(60), b.wait())
                .await
                .expect("backoff wait bounded");
        }
        // 500ms + 1s + 2s under paused (auto-advancing) time; the timer
        // wheel may round each sleep up by a millisecond.
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(3500) && took <= Duration::from_millis(3510),
            "{took:?}"
        );
    }
}
