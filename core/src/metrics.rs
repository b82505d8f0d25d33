//! Prometheus metrics on `prometheus-client`: typed families whose label
//! sets are structs (`#[derive(EncodeLabelSet)]`) of closed enums, and the
//! crate's own text encoder for the exposition. The bridge's metric set
//! (`BridgeMetrics`) is built on it in `sshbridge`.
//!
//! Metric handles ([`Counter`], [`Gauge`], [`Histogram`]) are atomics behind
//! an `Arc`: code on a hot path (a dial, a stream) holds its handles and
//! never touches a family's lock. The registry's lock is taken only to
//! register a family and by [`Registry::render`]. Label values are bounded
//! by design: a node name at most, plus small fixed enums; never a pod IP
//! or a stream id.
//!
//! Not here: the `/metrics` HTTP endpoint (the admin server serves
//! [`Registry::render`] with [`CONTENT_TYPE`]).

use std::fmt::Write as _;
use std::sync::Mutex;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
pub use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Metric;

use crate::path::PathState;

/// All metric families of a process. Cheap to share behind an `Arc`;
/// families are registered through `&self` (at start-up) and rendered in
/// registration order.
#[derive(Debug, Default)]
pub struct Registry(Mutex<prometheus_client::registry::Registry>);

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a family. `name` is the exposed name, except that a counter's
    /// `_total` is added by the encoder (so counters are registered without
    /// it). `help` is one sentence; its final period is the encoder's.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        let help = help.strip_suffix('.').unwrap_or(help);
        crate::lock(&self.0).register(name, help, metric);
    }

    /// The text exposition (Prometheus text format 0.0.4) of every family.
    /// Serve it with [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &crate::lock(&self.0))
        {
            // Writing into a String cannot fail; say so if it ever does.
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        out
    }
}

/// Implements [`EncodeLabelValue`] for a type with an
/// `as_str(self) -> &'static str` (a closed enum of label values).
#[macro_export]
macro_rules! label_value {
    ($($t:ty),+ $(,)?) => {$(
        impl $crate::metrics::EncodeLabelValue for $t {
            fn encode(
                &self,
                encoder: &mut $crate::metrics::LabelValueEncoder<'_>,
            ) -> ::std::fmt::Result {
                ::std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )+};
}

label_value!(PathState);

#[cfg(test)]
mod tests;
