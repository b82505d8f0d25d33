//! Dials through a node's path, recorded in that path's metrics.

use std::future::Future;
use std::time::Instant;

use crate::metrics::{DialFailure, PathMetrics};
use crate::path::{BoxStream, DialError};

/// `dial`, its latency and outcome recorded in `metrics`.
pub(super) async fn observed(
    metrics: &PathMetrics,
    dial: impl Future<Output = Result<BoxStream, DialError>>,
) -> Result<BoxStream, DialError> {
    let started = Instant::now();
    let result = dial.await;
    metrics.observe_dial(
        started.elapsed(),
        result.as_ref().map(|_| ()).map_err(DialFailure::from),
    );
    result.map(|stream| metrics.meter(stream))
}
