//! The shadow comparison: the same number of probes over both paths of a
//! node, and the verdict on whether the konnectivity path may take over.
//!
//! Percentiles use the nearest-rank method over successful probes only: the
//! p-th percentile of n sorted samples is the one at rank ceil(p/100 * n). On
//! the small samples a shadow takes (5 by default) p99 is therefore the
//! slowest successful probe, which is the cautious reading. Latencies are
//! compared at a floor of 1 ms, so sub-millisecond jitter on a fast link does
//! not fail a node.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fleet::ProbeSample;

/// Latencies below this are compared as this.
pub const LATENCY_FLOOR: Duration = Duration::from_millis(1);

/// The probes of one path, summed up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathSummary {
    /// Probes sent.
    pub probes: u32,
    /// Probes that failed.
    pub failures: u32,
    /// failures / probes (0 when no probe was sent).
    pub failure_ratio: f64,
    /// Median latency of successful probes; `None` when none succeeded.
    #[serde(with = "crate::settings::opt_duration_str")]
    pub p50: Option<Duration>,
    /// p99 (nearest rank) of successful probes; `None` when none succeeded.
    #[serde(with = "crate::settings::opt_duration_str")]
    pub p99: Option<Duration>,
    /// The last error seen, if any.
    pub last_error: Option<String>,
}

impl PathSummary {
    /// Summary of `samples`.
    pub fn of(samples: &[ProbeSample]) -> Self {
        let mut ok: Vec<Duration> = samples
            .iter()
            .filter(|s| s.is_ok())
            .map(|s| s.latency)
            .collect();
        ok.sort();
        let probes = samples.len() as u32;
        let failures = probes - ok.len() as u32;
        PathSummary {
            probes,
            failures,
            failure_ratio: if probes == 0 {
                0.0
            } else {
                f64::from(failures) / f64::from(probes)
            },
            p50: percentile(&ok, 50.0),
            p99: percentile(&ok, 99.0),
            last_error: samples.iter().rev().find_map(|s| s.error.clone()),
        }
    }
}

/// Nearest-rank percentile of sorted `values`.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Both paths of a node compared, with the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The SSH path's probes.
    pub ssh: PathSummary,
    /// The konnectivity path's probes.
    pub konnectivity: PathSummary,
    /// konnectivity p99 / ssh p99 (both at the floor), when both exist.
    pub latency_ratio: Option<f64>,
    /// Whether konnectivity may take over.
    pub passed: bool,
    /// Why, in one line an operator can act on.
    pub reason: String,
}

/// Compare the shadow probes of both paths against the thresholds.
pub fn compare(
    ssh: &[ProbeSample],
    konnectivity: &[ProbeSample],
    max_failure_ratio: f64,
    max_latency_ratio: f64,
) -> Comparison {
    let ssh = PathSummary::of(ssh);
    let k = PathSummary::of(konnectivity);
    let floor = |d: Duration| d.max(LATENCY_FLOOR).as_secs_f64();
    let latency_ratio = match (k.p99, ssh.p99) {
        (Some(kp), Some(sp)) => Some(floor(kp) / floor(sp)),
        _ => None,
    };
    let (passed, reason) = if k.probes == 0 {
        (false, "no konnectivity probe was taken".to_owned())
    } else if k.failure_ratio > max_failure_ratio {
        (
            false,
            format!(
                "konnectivity failed {} of {} probes ({:.0}%, limit {:.0}%){}",
                k.failures,
                k.probes,
                k.failure_ratio * 100.0,
                max_failure_ratio * 100.0,
                k.last_error
                    .as_deref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ),
        )
    } else {
        match (latency_ratio, k.p99, ssh.p99) {
            (Some(r), Some(kp), Some(sp)) if r > max_latency_ratio => (
                false,
                format!(
                    "konnectivity p99 {} is {r:.2}x ssh p99 {} (limit {max_latency_ratio}x)",
                    fmt_ms(kp),
                    fmt_ms(sp)
                ),
            ),
            (Some(r), Some(kp), Some(sp)) => (
                true,
                format!(
                    "konnectivity failed {} of {} probes; p99 {} is {r:.2}x ssh p99 {} (limit {max_latency_ratio}x)",
                    k.failures,
                    k.probes,
                    fmt_ms(kp),
                    fmt_ms(sp)
                ),
            ),
            (_, None, _) => (
                false,
                format!("every konnectivity probe failed ({} of {})", k.failures, k.probes),
            ),
            _ => (
                false,
                format!(
                    "no ssh probe succeeded ({} of {} failed), so there is no latency baseline; \
                     check the node's SSH path and apply again",
                    ssh.failures, ssh.probes
                ),
            ),
        }
    };
    Comparison {
        ssh,
        konnectivity: k,
        latency_ratio,
        passed,
        reason,
    }
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<ProbeSample> {
        v.iter()
            .map(|&m| ProbeSample::ok(Duration::from_millis(m)))
            .collect()
    }

    #[test]
    fn p99_of_a_small_sample_is_its_slowest_success() {
        let mut v: Vec<Duration> = [3, 1, 9, 2, 5].map(Duration::from_millis).to_vec();
        v.sort();
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(9)));
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(3)));
        assert_eq!(percentile(&[], 99.0), None);
        let many: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        assert_eq!(percentile(&many, 99.0), Some(Duration::from_millis(198)));
    }

    #[test]
    fn failure_ratio_threshold_both_ways() {
        let ssh = ms(&[10, 10, 10, 10, 10]);
        let mut k = ms(&[10, 10, 10, 10]);
        k.push(ProbeSample::failed(Duration::from_secs(5), "dial timeout"));
        let c = compare(&ssh, &k, 0.0, 2.0);
        assert!(!c.passed);
        assert!(c.reason.contains("failed 1 of 5"), "{}", c.reason);
        assert!(c.reason.contains("dial timeout"), "{}", c.reason);
        let c = compare(&ssh, &k, 0.2, 2.0);
        assert!(c.passed, "{}", c.reason);
        assert_eq!(c.konnectivity.failure_ratio, 0.2);
    }

    #[test]
    fn latency_ratio_threshold_both_ways() {
        let ssh = ms(&[10, 12, 11, 10, 20]);
        let slow = ms(&[10, 12, 11, 10, 41]);
        let c = compare(&ssh, &slow, 0.0, 2.0);
        assert!(!c.passed);
        assert!(c.reason.contains("2.05x"), "{}", c.reason);
        let ok = ms(&[10, 12, 11, 10, 40]);
        let c = compare(&ssh, &ok, 0.0, 2.0);
        assert!(c.passed, "{}", c.reason);
        assert_eq!(c.latency_ratio, Some(2.0));
    }

    #[test]
    fn sub_millisecond_jitter_does_not_fail_and_no_baseline_does() {
        let fast = ms(&[0, 0, 0]);
        let c = compare(&fast, &ms(&[1, 1, 1]), 0.0, 2.0);
        assert!(c.passed, "{}", c.reason);
        let dead: Vec<_> = (0..3)
            .map(|_| ProbeSample::failed(Duration::ZERO, "session down"))
            .collect();
        let c = compare(&dead, &ms(&[1, 1, 1]), 0.0, 2.0);
        assert!(!c.passed);
        assert!(c.reason.contains("no latency baseline"), "{}", c.reason);
        let c = compare(&fast, &dead, 1.0, 2.0);
        assert!(!c.passed);
        assert!(c.reason.contains("every konnectivity probe failed"));
    }
}
