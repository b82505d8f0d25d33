//! One sample every 10 s, the samples file, and the verdict: a linear fit
//! of each resource over the run after the first fifth (warm-up), whose
//! rise over that span must stay within a tolerance.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sshbridge_tests::netlab::procstat::ProcStat;
use tokio::time::Instant;

use crate::load::Mixed;
use crate::EVERY;

/// What the bridge held and how its dials went at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub t_s: f64,
    pub rss_kib: u64,
    pub fds: usize,
    pub threads: u64,
    /// p99 of the echo dials' CONNECT latency in the last interval.
    pub p99_dial_ms: Option<f64>,
    pub dials_ok: usize,
    pub dials_failed: usize,
    /// Failed requests of the other loops since the start.
    pub other_failed_total: u64,
}

impl Sample {
    pub fn line(&self) -> String {
        format!(
            "t={:>5.0}s rss={} KiB fds={} threads={} p99_dial={} dials ok/failed={}/{} other failed={}",
            self.t_s,
            self.rss_kib,
            self.fds,
            self.threads,
            self.p99_dial_ms.map_or("-".into(), |v| format!("{v:.1}ms")),
            self.dials_ok,
            self.dials_failed,
            self.other_failed_total
        )
    }
}

pub fn take(pid: u32, start: Instant, load: &Mixed) -> anyhow::Result<Sample> {
    let p = ProcStat::of(pid)?;
    let since = Instant::now() - EVERY;
    let window: Vec<_> = load
        .traffic
        .attempts()
        .into_iter()
        .filter(|a| a.at >= since)
        .collect();
    let mut ok: Vec<Duration> = window
        .iter()
        .filter(|a| a.result.is_ok())
        .map(|a| a.dial)
        .collect();
    ok.sort();
    let p99 = (!ok.is_empty()).then(|| {
        let i = (ok.len() * 99 / 100).min(ok.len() - 1);
        ok[i].as_secs_f64() * 1000.0
    });
    Ok(Sample {
        t_s: start.elapsed().as_secs_f64(),
        rss_kib: p.rss_kib,
        fds: p.fds,
        threads: p.threads,
        p99_dial_ms: p99,
        dials_ok: ok.len(),
        dials_failed: window.len() - ok.len(),
        other_failed_total: load.failed(),
    })
}

pub fn write(path: &Path, samples: &[Sample]) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(samples)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// One resource's fit.
#[derive(Debug, Clone)]
pub struct Growth {
    pub name: &'static str,
    /// Fitted rise over the judged span, in the resource's unit.
    pub rise: f64,
    pub tolerance: f64,
    pub first: f64,
    pub last: f64,
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub ok: bool,
    pub span_s: f64,
    pub growth: Vec<Growth>,
    pub note: Option<String>,
}

impl Verdict {
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .growth
            .iter()
            .map(|g| {
                format!(
                    "{} {:.0} -> {:.0}, fitted rise {:+.1} (tolerance {:.0})",
                    g.name, g.first, g.last, g.rise, g.tolerance
                )
            })
            .collect();
        format!(
            "{} over {:.0}s judged: {}{}",
            if self.ok { "PASS" } else { "FAIL (growth)" },
            self.span_s,
            parts.join("; "),
            self.note
                .as_deref()
                .map_or(String::new(), |n| format!(" ({n})"))
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "ok": self.ok,
            "judged_span_s": self.span_s,
            "note": self.note,
            "growth": self.growth.iter().map(|g| json!({
                "resource": g.name, "fitted_rise": g.rise, "tolerance": g.tolerance,
                "first": g.first, "last": g.last,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Least-squares slope of `ys` over `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if var == 0.0 {
        0.0
    } else {
        cov / var
    }
}

pub fn verdict(samples: &[Sample]) -> Verdict {
    let judged = &samples[samples.len() / 5..];
    if judged.len() < 4 {
        return Verdict {
            ok: false,
            span_s: 0.0,
            growth: Vec::new(),
            note: Some(format!(
                "only {} samples after warm-up; run longer",
                judged.len()
            )),
        };
    }
    let xs: Vec<f64> = judged.iter().map(|s| s.t_s).collect();
    let span = xs[xs.len() - 1] - xs[0];
    let series = |f: &dyn Fn(&Sample) -> f64| judged.iter().map(f).collect::<Vec<f64>>();
    let rss = series(&|s| s.rss_kib as f64);
    let mean_rss = rss.iter().sum::<f64>() / rss.len() as f64;
    // A run under 10 minutes is mostly allocator warm-up (RSS still
    // climbs towards its plateau for the first few minutes): it only
    // catches fast leaks, with a wider RSS tolerance.
    let short = samples.last().is_some_and(|s| s.t_s < 600.0);
    let rss_tolerance = if short {
        (mean_rss * 0.25).max(16384.0)
    } else {
        (mean_rss * 0.10).max(8192.0)
    };
    let resources: [(&'static str, Vec<f64>, f64); 3] = [
        ("rss_kib", rss, rss_tolerance),
        ("fds", series(&|s| s.fds as f64), 6.0),
        ("threads", series(&|s| s.threads as f64), 2.0),
    ];
    let growth: Vec<Growth> = resources
        .into_iter()
        .map(|(name, ys, tolerance)| Growth {
            name,
            rise: slope(&xs, &ys) * span,
            tolerance,
            first: ys[0],
            last: ys[ys.len() - 1],
        })
        .collect();
    Verdict {
        ok: growth.iter().all(|g| g.rise <= g.tolerance),
        span_s: span,
        growth,
        note: None,
    }
}
