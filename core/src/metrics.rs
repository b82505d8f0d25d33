//! Prometheus metrics: a small registry with its own text encoder. The
//! bridge's metric set (`BridgeMetrics`) is built on it in `sshbridge`.
//!
//! Metric handles ([`Counter`], [`Gauge`], [`Histogram`]) are atomics behind
//! an `Arc`: code on a hot path (a dial, a stream) holds its handles and
//! never touches the registry's lock. The lock is taken only to create a
//! series and by [`Registry::render`], which walks every family in name
//! order. Label values are bounded by design: a node name at most, plus
//! small fixed enums; never a pod IP or a stream id.
//!
//! Not here: the `/metrics` HTTP endpoint (the admin server serves
//! [`Registry::render`] with [`CONTENT_TYPE`]).

mod text;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use text::{escape_label_value, CONTENT_TYPE};

/// The name, help text and label names of a metric family. `N` is the
/// number of labels, so a series can only be asked for with as many values.
#[derive(Debug, Clone, Copy)]
pub struct Desc<const N: usize> {
    /// Family name (`sshbridge_...`, base units, `_total` for counters).
    pub name: &'static str,
    /// One line for `# HELP`.
    pub help: &'static str,
    /// Label names, in the order values are given.
    pub labels: [&'static str; N],
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Mirrors a cumulative count kept elsewhere (e.g. a tunnel's stats
    /// snapshot): raises the counter to `total`, never lowers it.
    pub fn set_at_least(&self, total: u64) {
        self.0.fetch_max(total, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (stored as `f64` bits).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// Adds `d` (may be negative).
    pub fn add(&self, d: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + d).to_bits())
            });
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A histogram with fixed bucket upper bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts; the last slot holds observations above every
    /// bound. Rendering accumulates them, so buckets are cumulative and the
    /// `+Inf` bucket always equals `_count`.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// A consistent-enough copy of a histogram for rendering and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, cumulative count)`, ending with `(+Inf, count)`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of all observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// A histogram over `bounds`, which must be finite and strictly
    /// increasing (bounds that are not are skipped).
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(
            bounds.windows(2).all(|w| w[0] < w[1]) && bounds.iter().all(|b| b.is_finite()),
            "histogram bounds must be finite and increasing"
        );
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        let slot = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// Records a duration in seconds (the base unit).
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Cumulative buckets, sum and count.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            acc += c.load(Ordering::Relaxed);
            buckets.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), acc));
        }
        HistogramSnapshot {
            buckets,
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
            count: acc,
        }
    }
}

#[derive(Debug, Clone)]
enum Series {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    Histogram(Arc<Histogram>),
}

impl Series {
    fn kind(&self) -> &'static str {
        match self {
            Series::Counter(_) => "counter",
            Series::Gauge(_) => "gauge",
            Series::Histogram(_) => "histogram",
        }
    }
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: &'static str,
    labels: Vec<&'static str>,
    series: BTreeMap<Vec<String>, Series>,
}

/// All metric families of a process. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter of `desc` with these label values, created at 0.
    pub fn counter<const N: usize>(&self, desc: &Desc<N>, values: [&str; N]) -> Arc<Counter> {
        match self.series(desc, values, || Series::Counter(Arc::default())) {
            Series::Counter(c) => c,
            _ => Arc::default(),
        }
    }

    /// The gauge of `desc` with these label values, created at 0.
    pub fn gauge<const N: usize>(&self, desc: &Desc<N>, values: [&str; N]) -> Arc<Gauge> {
        match self.series(desc, values, || Series::Gauge(Arc::default())) {
            Series::Gauge(g) => g,
            _ => Arc::default(),
        }
    }

    /// The histogram of `desc` with these label values and bucket bounds,
    /// created empty. The bounds of the first series of a family win.
    pub fn histogram<const N: usize>(
        &self,
        desc: &Desc<N>,
        bounds: &'static [f64],
        values: [&str; N],
    ) -> Arc<Histogram> {
        let new = || Series::Histogram(Arc::new(Histogram::new(bounds)));
        match self.series(desc, values, new) {
            Series::Histogram(h) => h,
            _ => Arc::new(Histogram::new(bounds)),
        }
    }

    /// Finds or creates a series. A family asked for with another type than
    /// it was created with is a programming error: debug builds panic,
    /// release builds hand out a detached series that is never rendered.
    fn series<const N: usize>(
        &self,
        desc: &Desc<N>,
        values: [&str; N],
        new: impl FnOnce() -> Series,
    ) -> Series {
        debug_assert!(
            text::is_valid_name(desc.name),
            "bad metric name {}",
            desc.name
        );
        let fresh = new();
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(desc.name).or_insert_with(|| Family {
            help: desc.help,
            kind: fresh.kind(),
            labels: desc.labels.to_vec(),
            series: BTreeMap::new(),
        });
        if family.kind != fresh.kind() || family.labels != desc.labels {
            debug_assert!(
                false,
                "metric {} registered twice with different shapes",
                desc.name
            );
            return fresh;
        }
        let key = values.iter().map(|v| v.to_string()).collect();
        family.series.entry(key).or_insert(fresh).clone()
    }

    /// Drops every series whose label `label` has value `value` (e.g. a
    /// node removed by a reload). Handles still held keep working but are
    /// no longer rendered.
    pub fn remove_series(&self, label: &str, value: &str) {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        for family in families.values_mut() {
            if let Some(i) = family.labels.iter().position(|l| *l == label) {
                family.series.retain(|values, _| values[i] != value);
            }
        }
    }

    /// The text exposition of every family, sorted by name, each series
    /// sorted by label values. Serve it with [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(4096);
        for (name, family) in families.iter() {
            text::write_header(&mut out, name, family.help, family.kind);
            for (values, series) in &family.series {
                render_series(&mut out, name, &family.labels, values, series);
            }
        }
        out
    }
}

fn render_series(
    out: &mut String,
    name: &str,
    labels: &[&'static str],
    values: &[String],
    series: &Series,
) {
    use text::{format_value, write_sample};
    match series {
        Series::Counter(c) => write_sample(out, name, labels, values, None, &c.get().to_string()),
        Series::Gauge(g) => write_sample(out, name, labels, values, None, &format_value(g.get())),
        Series::Histogram(h) => {
            let snap = h.snapshot();
            let bucket = format!("{name}_bucket");
            for (le, n) in &snap.buckets {
                let le = format_value(*le);
                write_sample(
                    out,
                    &bucket,
                    labels,
                    values,
                    Some(("le", &le)),
                    &n.to_string(),
                );
            }
            write_sample(
                out,
                &format!("{name}_sum"),
                labels,
                values,
                None,
                &format_value(snap.sum),
            );
            write_sample(
                out,
                &format!("{name}_count"),
                labels,
                values,
                None,
                &snap.count.to_string(),
            );
        }
    }
}
