//! For `ha_rollout`: the routes of every bridge, sampled while the rollout runs: when each
//! bridge first served each node over Konnectivity.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sshbridge_config::Route;
use sshbridge_migrate::Status;
use sshbridge_tests::{status_summary, Bridge};

/// Bound on the rollout and on each sampling run.
pub(crate) const ROLLOUT: Duration = Duration::from_secs(90);
/// How often the routes of every bridge are sampled.
pub(crate) const SAMPLE: Duration = Duration::from_millis(25);

/// When each bridge first served each node over Konnectivity, sampled
/// every [`SAMPLE`].
#[derive(Default)]
pub(crate) struct Flips(BTreeMap<(usize, String), Instant>);

impl Flips {
    /// Samples the routes of `bridges` (index, bridge) until `done` holds
    /// for the status of `driver`, or `bound` passes.
    pub(crate) async fn sample_until(
        &mut self,
        bridges: &[(usize, &Bridge)],
        driver: &Bridge,
        what: &str,
        done: impl Fn(&Status) -> bool,
    ) -> anyhow::Result<Status> {
        let start = Instant::now();
        loop {
            for (i, b) in bridges {
                let report = b.report().await?;
                for n in report.nodes {
                    if n.route == Route::Konnectivity {
                        self.0.entry((*i, n.name)).or_insert_with(Instant::now);
                    }
                }
            }
            let status = driver.migration_status().await?;
            if done(&status) {
                return Ok(status);
            }
            anyhow::ensure!(
                start.elapsed() < ROLLOUT,
                "{what}: not within {ROLLOUT:?}; {}",
                status_summary(&status)
            );
            tokio::time::sleep(SAMPLE).await;
        }
    }

    /// How long after `leader` bridge `follower` switched `node`.
    pub(crate) fn lag(&self, leader: usize, follower: usize, node: &str) -> Option<Duration> {
        let at = |i| self.0.get(&(i, node.to_owned())).copied();
        Some(at(follower)?.saturating_duration_since(at(leader)?))
    }
}
