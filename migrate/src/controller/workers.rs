//! The two watchers a node has while its step runs: the shadow prober and
//! the soak watcher. They only observe and report; the engine owns the state
//! and makes every transition.

use std::sync::Arc;
use std::time::Duration;

use sshbridge_config::Route;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;

use crate::fleet::{Fleet, LiveCounters, ProbeSample};
use crate::settings::Settings;

/// What a watcher reports to the engine. `gen` identifies the watcher, so a
/// report from one that was replaced is ignored.
#[derive(Debug)]
pub(super) enum Event {
    /// Shadow probes finished.
    Shadow {
        node: String,
        gen: u64,
        ssh: Vec<ProbeSample>,
        konnectivity: Vec<ProbeSample>,
    },
    /// The konnectivity path breached a threshold during soak.
    SoakBreach {
        node: String,
        gen: u64,
        reason: String,
    },
    /// The soak ran its full length without a breach.
    SoakClean {
        node: String,
        gen: u64,
        summary: String,
    },
}

/// One probe, bounded by the probe timeout.
async fn probe<F: Fleet>(
    fleet: &F,
    node: &str,
    path: Route,
    limit: std::time::Duration,
) -> ProbeSample {
    match timeout(limit, fleet.probe(node, path)).await {
        Ok(s) => s,
        Err(_) => ProbeSample::failed(
            limit,
            format!(
                "no answer from the {path} path of {node} within {}",
                humantime::format_duration(limit)
            ),
        ),
    }
}

/// Probe both paths `shadow_probes` times, then report the samples.
pub(super) async fn shadow<F: Fleet>(
    fleet: Arc<F>,
    node: String,
    gen: u64,
    s: Settings,
    token: CancellationToken,
    tx: UnboundedSender<Event>,
) {
    if !wait_ready(&*fleet, &node, true, &s, &token).await {
        return;
    }
    let mut ssh = Vec::new();
    let mut konnectivity = Vec::new();
    for i in 0..s.shadow_probes {
        if i > 0 {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = sleep(s.probe_interval) => {}
            }
        }
        let both = async {
            tokio::join!(
                probe(&*fleet, &node, Route::Ssh, s.probe_timeout),
                probe(&*fleet, &node, Route::Konnectivity, s.probe_timeout)
            )
        };
        let (a, b) = tokio::select! {
            _ = token.cancelled() => return,
            r = both => r,
        };
        ssh.push(a);
        konnectivity.push(b);
    }
    let _ = tx.send(Event::Shadow {
        node,
        gen,
        ssh,
        konnectivity,
    });
}

/// A timeout this far away stands for "never": thirty years.
const NEVER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `at + d`, saturating at [`NEVER`] from `at`: durations from a state
/// file or a request never overflow an instant.
pub(super) fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d.min(NEVER))
        .or_else(|| at.checked_add(NEVER))
        .unwrap_or(at)
}

/// Waits until `node` has a healthy agent (and, with `need_ssh`, its SSH
/// path is up), bounded by `ready_timeout`: after a daemon restart both
/// paths take a moment to come back, and probes counted before that would
/// blame the path for the restart. Returns `false` only when cancelled;
/// after the timeout the step goes on and its probes tell what is wrong.
pub(super) async fn wait_ready<F: Fleet>(
    fleet: &F,
    node: &str,
    need_ssh: bool,
    s: &Settings,
    token: &CancellationToken,
) -> bool {
    let deadline = later(Instant::now(), s.ready_timeout);
    loop {
        let ready = fleet
            .nodes()
            .into_iter()
            .find(|v| v.name == node)
            .is_some_and(|v| v.agents_healthy > 0 && (v.ssh_up || !need_ssh));
        if ready || Instant::now() >= deadline {
            return true;
        }
        tokio::select! {
            _ = token.cancelled() => return false,
            _ = sleep(s.probe_interval.min(Duration::from_millis(250))) => {}
        }
    }
}

/// Failures seen on the konnectivity path since the soak began.
#[derive(Debug, Default)]
struct Tally {
    probes_ok: u64,
    probes_failed: u64,
    last_error: Option<String>,
}

/// Watch the konnectivity path of a cut-over node until `deadline`.
pub(super) async fn soak<F: Fleet>(
    fleet: Arc<F>,
    node: String,
    gen: u64,
    deadline: Instant,
    s: Settings,
    token: CancellationToken,
    tx: UnboundedSender<Event>,
) {
    let waited = Instant::now();
    if !wait_ready(&*fleet, &node, false, &s, &token).await {
        return;
    }
    // The soak lasts its full length once the path is usable again.
    let deadline = later(deadline, waited.elapsed());
    let base = fleet.live(&node, Route::Konnectivity);
    let mut tally = Tally::default();
    loop {
        let next = later(Instant::now(), s.probe_interval).min(deadline);
        tokio::select! {
            _ = token.cancelled() => return,
            _ = sleep_until(next) => {}
        }
        if Instant::now() < deadline {
            let sample = tokio::select! {
                _ = token.cancelled() => return,
                p = probe(&*fleet, &node, Route::Konnectivity, s.probe_timeout) => p,
            };
            match sample.error {
                None => tally.probes_ok += 1,
                Some(e) => {
                    tally.probes_failed += 1;
                    tally.last_error = Some(e);
                }
            }
        }
        let live = fleet.live(&node, Route::Konnectivity);
        let verdict = judge(&base, &live, &tally, s.max_failure_ratio);
        // Then the other bridges: a node broken from one of them fails too.
        let verdict = verdict.map_err(|b| b.to_string()).and_then(|summary| {
            let peers = crate::peers::judge(&node, &fleet.peers(&node));
            match peers.passed {
                true => Ok(peers.fold(true, &summary).1),
                false => Err(peers.reason),
            }
        });
        let event = match verdict {
            Err(reason) => Event::SoakBreach { node, gen, reason },
            Ok(summary) if Instant::now() >= deadline => Event::SoakClean { node, gen, summary },
            Ok(_) => continue,
        };
        let _ = tx.send(event);
        return;
    }
}

/// A soak's failure ratio over the limit; the reason a rollout pauses or
/// aborts.
#[derive(Debug, thiserror::Error)]
#[error("konnectivity {what} failed during soak: {failed} of {total} (limit {limit}%){last}")]
struct Breach {
    /// `dials` or `probes`.
    what: &'static str,
    failed: u64,
    total: u64,
    /// The limit, in percent.
    limit: f64,
    /// `; last error: ...`, or nothing.
    last: String,
}

/// `Ok(summary)` while the path is within the failure ratio, a [`Breach`]
/// once dials or probes (ours plus the daemon's) fail more often than that.
fn judge(
    base: &LiveCounters,
    live: &LiveCounters,
    tally: &Tally,
    max_ratio: f64,
) -> Result<String, Breach> {
    let dials_failed = live.dials_failed.saturating_sub(base.dials_failed);
    let dials = dials_failed + live.dials_ok.saturating_sub(base.dials_ok);
    let probes_failed = tally.probes_failed + live.probes_failed.saturating_sub(base.probes_failed);
    let probes = probes_failed + tally.probes_ok + live.probes_ok.saturating_sub(base.probes_ok);
    let over = |failed: u64, total: u64| failed > 0 && failed as f64 / total as f64 > max_ratio;
    let last = live
        .last_error
        .as_ref()
        .filter(|_| {
            live.dials_failed > base.dials_failed || live.probes_failed > base.probes_failed
        })
        .or(tally.last_error.as_ref())
        .map(|e| format!("; last error: {e}"))
        .unwrap_or_default();
    let breach = |what, failed, total| Breach {
        what,
        failed,
        total,
        limit: max_ratio * 100.0,
        last: last.clone(),
    };
    if over(dials_failed, dials) {
        return Err(breach("dials", dials_failed, dials));
    }
    if over(probes_failed, probes) {
        return Err(breach("probes", probes_failed, probes));
    }
    Ok(format!(
        "{probes} probes, {probes_failed} failed; {dials} dials, {dials_failed} failed"
    ))
}
