//! Health of every node's paths: a prober per node and path that checks the
//! kubelet through that path, and a state with hysteresis the router, the
//! report and the metrics read.
//!
//! A probe dials `address:kubelet_port` through the path ([`ProbeDial`]),
//! speaks TLS verified against `health.kubelet_ca` with the node address as
//! the server name (an IP SAN), sends `GET kubelet_path` and expects 200,
//! all within [`ProbeSettings::timeout`]. States:
//!
//! - `unknown` until the first probe (or transport check) says otherwise;
//! - `up` after `up_after` consecutive successes;
//! - `degraded` from `up` after a failure, `down` after `down_after`
//!   consecutive failures;
//! - `down` at once when the path's transport (its SSH session) goes down,
//!   without waiting for probes; `up` again after `up_after` successes once
//!   the transport is back.
//!
//! Without `health.kubelet_ca` no HTTPS probe runs: the state follows the
//! transport only (`up` while it is up, `down` otherwise), which proves the
//! session but not that the kubelet answers.
//!
//! Not here: routing decisions and the `/report` document; they read
//! [`ProbeHandle::snapshot`].

mod probe;
mod run;
mod state;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::path::{dial_within, BoxStream, DialError, Liveness, SharedPath};
use crate::tasks::Tasks;
use crate::tls::TlsError;
use run::Run;
use sshbridge_core::PathKind;

pub use probe::{ProbeError, ProbeErrorKind, ProbeFailure};

/// One probe now, outside the periodic prober (the migration's shadow
/// probes): the kubelet HTTPS GET through `dialer` when a kubelet CA is
/// configured, else a plain dial of the kubelet port. Bounded by the probe
/// timeout. Returns the latency, or the failure naming node and path.
pub async fn probe_now<D: ProbeDial>(
    node: &str,
    path: PathKind,
    address: IpAddr,
    dialer: &D,
    settings: &ProbeSettings,
) -> Result<Duration, ProbeFailure> {
    let port = settings.kubelet_port;
    let started = std::time::Instant::now();
    let once = async {
        match &settings.tls {
            Some(tls) => {
                probe::probe_once(dialer, address, port, &settings.kubelet_path, tls.clone()).await
            }
            None => dialer
                .dial(&address.to_string(), port)
                .await
                .map(drop)
                .map_err(ProbeError::Dial),
        }
    };
    let result = tokio::time::timeout(settings.timeout, once)
        .await
        .unwrap_or(Err(ProbeError::Timeout(settings.timeout)));
    result
        .map(|()| started.elapsed())
        .map_err(|error| ProbeFailure {
            node: node.to_string(),
            target: SocketAddr::new(address, port),
            path,
            error,
        })
}
use state::Tracker;
pub use state::WINDOW;

/// Longest probe timeout chosen by [`ProbeSettings::from_config`].
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a prober reaches the kubelet through one path. The daemon implements
/// it for both paths: the SSH tunnel and the Konnectivity agent stream.
pub trait ProbeDial: Send + Sync + 'static {
    /// Opens a stream to `host:port` as seen from the node.
    fn dial(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = Result<BoxStream, DialError>> + Send;
}

/// A node's path dialed within `timeout`: how the daemon's probes reach
/// the kubelet. Probes dial like any stream, but are not counted as
/// egress dials.
pub struct PathDial {
    /// Node name, for errors.
    pub node: String,
    /// The path probed.
    pub path: SharedPath,
    /// Bound of each dial.
    pub timeout: Duration,
}

impl ProbeDial for PathDial {
    async fn dial(&self, host: &str, port: u16) -> Result<BoxStream, DialError> {
        dial_within(&*self.path, &self.node, host, port, self.timeout).await
    }
}

pub use sshbridge_core::PathState;

/// `[health]` could not be turned into probe settings.
#[derive(Debug, thiserror::Error)]
pub enum HealthSetupError {
    /// The kubelet CA file is unusable.
    #[error("health.kubelet_ca: {0}")]
    Ca(#[from] TlsError),
    /// rustls refused to build a client config.
    #[error("health probes: cannot build a TLS client: {0}")]
    Tls(#[from] rustls::Error),
}

/// How probes of one path run. Clone one per prober.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// Time between probes.
    pub interval: Duration,
    /// Bound on one probe (dial, TLS, request, status line).
    pub timeout: Duration,
    /// Kubelet HTTPS port on the node address.
    pub kubelet_port: u16,
    /// Path requested (`/healthz`).
    pub kubelet_path: String,
    /// TLS client trusting `health.kubelet_ca`; `None`: no HTTPS probe, the
    /// state follows the transport only.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Consecutive failures before `down`.
    pub down_after: u32,
    /// Consecutive successes before `up`.
    pub up_after: u32,
    /// Where probe durations, results and state changes are published
    /// (the daemon wires the path's metrics here).
    pub events: Option<Arc<dyn HealthEvents>>,
}

/// What a prober publishes as it happens: each probe and each change of
/// the path's state. Health knows nothing of who listens.
pub trait HealthEvents: std::fmt::Debug + Send + Sync + 'static {
    /// One probe ended after `elapsed`, passing or failing with a kind.
    fn probed(&self, elapsed: Duration, outcome: Result<(), ProbeErrorKind>);
    /// The path's state is now `state` (also sent once at start).
    fn state_changed(&self, state: PathState);
}

impl ProbeSettings {
    /// Settings from `[health]`: loads `kubelet_ca`; the timeout is
    /// `min(interval, 5s)`.
    pub fn from_config(cfg: &sshbridge_config::Health) -> Result<Self, HealthSetupError> {
        let tls = match &cfg.kubelet_ca {
            Some(ca) => {
                let roots = crate::tls::load_roots(ca)?;
                let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(Arc::new(config))
            }
            None => None,
        };
        Ok(ProbeSettings {
            interval: cfg.interval,
            timeout: cfg.interval.min(MAX_PROBE_TIMEOUT),
            kubelet_port: cfg.kubelet_port,
            kubelet_path: cfg.kubelet_path.clone(),
            tls,
            down_after: cfg.down_after,
            up_after: cfg.up_after,
            events: None,
        })
    }

    /// The same settings, publishing to `events` (one node's path).
    pub fn with_events(mut self, events: Arc<dyn HealthEvents>) -> Self {
        self.events = Some(events);
        self
    }
}

/// A copy of one path's health, for reports and routing.
#[derive(Debug, Clone, PartialEq)]
pub struct PathHealth {
    /// Node name.
    pub node: String,
    /// `ssh` or `konnectivity`.
    pub path: PathKind,
    /// Kubelet address probed.
    pub target: SocketAddr,
    /// Whether HTTPS probes run (false without `health.kubelet_ca`).
    pub probing: bool,
    /// Current state.
    pub state: PathState,
    /// When the current state began.
    pub since: SystemTime,
    /// Whether the path's transport was up at the last check.
    pub transport_up: bool,
    /// The last failure, naming node, address and what to do.
    pub last_error: Option<String>,
    /// Its class: `dial_error`, `tls_error`, `io_error`, `http_error`,
    /// `timeout` or `transport`.
    pub last_error_class: Option<&'static str>,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// Successful probes in a row.
    pub consecutive_successes: u32,
    /// Median latency of the successful probes in the window, ms.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency of the successful probes in the window, ms.
    pub latency_p99_ms: Option<f64>,
    /// Failed probes in the window.
    pub window_failures: u32,
    /// Probes in the window (at most [`WINDOW`]).
    pub window_size: u32,
    /// Successful probes since start.
    pub probes_ok: u64,
    /// Failed probes since start.
    pub probes_failed: u64,
    /// When the last probe finished.
    pub last_probe: Option<SystemTime>,
}

/// What the prober task and its handles share.
#[derive(Debug)]
struct Shared {
    node: String,
    path: PathKind,
    target: SocketAddr,
    probing: bool,
    tracker: Mutex<Tracker>,
    /// Current state; the prober is the only sender.
    state: watch::Sender<PathState>,
}

/// Handle to a running prober. Cloning is cheap. Dropping every handle
/// does not stop the prober: cancel its shutdown token.
#[derive(Debug, Clone)]
pub struct ProbeHandle {
    shared: Arc<Shared>,
}

impl ProbeHandle {
    /// The path's health now (takes a short lock).
    pub fn snapshot(&self) -> PathHealth {
        let s = &self.shared;
        let t = s.tracker.lock().unwrap_or_else(|p| p.into_inner());
        let (window_failures, window_size) = t.window_failures();
        PathHealth {
            node: s.node.clone(),
            path: s.path,
            target: s.target,
            probing: s.probing,
            state: t.state,
            since: t.since,
            transport_up: t.transport_up,
            last_error: t.last_error.clone(),
            last_error_class: t.last_error_class,
            consecutive_failures: t.consecutive_failures,
            consecutive_successes: t.consecutive_successes,
            latency_p50_ms: t.latency_ms(0.5),
            latency_p99_ms: t.latency_ms(0.99),
            window_failures,
            window_size,
            probes_ok: t.probes_ok,
            probes_failed: t.probes_failed,
            last_probe: t.last_probe,
        }
    }

    /// The current state, and every change from now on.
    pub fn subscribe(&self) -> watch::Receiver<PathState> {
        self.shared.state.subscribe()
    }

    /// The current state.
    pub fn state(&self) -> PathState {
        *self.shared.state.borrow()
    }
}

/// Spawns probers.
#[derive(Debug)]
pub struct Prober;

impl Prober {
    /// Starts probing `node`'s kubelet at `address` through `dialer` every
    /// `settings.interval`, the first probe `phase` from now (the daemon
    /// staggers nodes with `phase = interval * i / n`). `liveness` is true
    /// while the path's transport is up; when it turns false the path is
    /// `down` at once, and when its sender is dropped the transport counts
    /// as down for good. Runs in `tasks` until `shutdown` is cancelled.
    #[allow(clippy::too_many_arguments)] // the daemon's call site names each part
    pub fn spawn(
        node: String,
        address: IpAddr,
        path: PathKind,
        dialer: impl ProbeDial,
        liveness: impl Into<Liveness>,
        settings: ProbeSettings,
        phase: Duration,
        shutdown: CancellationToken,
        tasks: &Tasks,
    ) -> ProbeHandle {
        let shared = Arc::new(Shared {
            target: SocketAddr::new(address, settings.kubelet_port),
            node,
            path,
            probing: settings.tls.is_some(),
            tracker: Mutex::new(Tracker::new(
                settings.up_after,
                settings.down_after,
                SystemTime::now(),
            )),
            state: watch::Sender::new(PathState::Unknown),
        });
        if let Some(e) = &settings.events {
            e.state_changed(PathState::Unknown);
        }
        let run = Run {
            shared: shared.clone(),
            settings,
            liveness: liveness.into(),
            liveness_open: true,
        };
        let name = format!("prober {} {path}", shared.node);
        tasks.spawn(name, run.run(dialer, phase, shutdown));
        ProbeHandle { shared }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_loopback;
