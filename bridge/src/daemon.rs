//! The daemon: one SSH tunnel and prober per node, the egress frontends,
//! the admin API, reloads and the drain on shutdown.
//!
//! State that a reload replaces lives in one [`Snapshot`] (config, routing
//! table, nodes) swapped atomically; a stream that already resolved keeps
//! the tunnel it dialed through, so a reload never cuts open streams of
//! nodes that stay.

pub mod listen;
mod migration;
mod migration_api;
mod node;
mod observe;
mod reload;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use sshbridge_config::{Config, Route};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::egress::http_connect::{self, Lifecycle, Limits};
use crate::egress::{Dial, Dialed, EgressError};
use crate::handshake::HandshakeLimit;
use crate::health::{HealthSetupError, ProbeSettings};
use crate::konnectivity::{self, Hub};
use crate::metrics::BridgeMetrics;
use crate::router::{RouteError, Table};
use crate::ssh::{SshContext, SshSetupError, TunnelState, TunnelStats};

pub use listen::{BindError, Listeners};
use node::{NodeEntry, Spawn};

/// A route change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteChangeError {
    /// No such node in the current config.
    #[error("no node named {0} in the current configuration")]
    UnknownNode(String),
    /// Konnectivity needs the `[konnectivity]` section.
    #[error("node {0} cannot be routed to konnectivity: the config has no [konnectivity] section")]
    NoKonnectivity(String),
}

/// The daemon could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The SSH identity or known_hosts could not be loaded.
    #[error(transparent)]
    Ssh(#[from] SshSetupError),
    /// The health probe settings (kubelet CA) could not be loaded.
    #[error(transparent)]
    Health(#[from] HealthSetupError),
    /// Another daemon holds the migration store.
    #[error(transparent)]
    StoreInUse(sshbridge_migrate::StoreError),
}

/// Everything a reload replaces, swapped as one.
struct Snapshot {
    config: Arc<Config>,
    table: Table,
    /// Probe settings, for the migration's one-off probes.
    probes: ProbeSettings,
    nodes: HashMap<String, NodeEntry>,
}

/// Shared between the frontends (as their [`Dial`]), the admin server and
/// the control side.
struct Shared {
    current: RwLock<Arc<Snapshot>>,
    metrics: BridgeMetrics,
    started: Instant,
    /// Cancelled when the daemon stops accepting (for `/readyz`).
    stop_accepting: CancellationToken,
    /// Whether an egress listener was configured and is being served.
    egress_listeners: usize,
    /// The Konnectivity agent hub, with a `[konnectivity]` section.
    hub: Option<Hub>,
    /// The route the migration controller last set per node: the store is
    /// the authority for these, so a reload keeps them over the config's.
    migration_routes: std::sync::Mutex<HashMap<String, Route>>,
    /// The migration controller, or why it is unavailable. Set once,
    /// right after start.
    migration: OnceLock<Result<sshbridge_migrate::Controller, migration::Unavailable>>,
}

impl Shared {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Parks the SSH sessions of `nodes` whose migration is finalized:
    /// each closes once its open streams end, and reconnects only if the
    /// node is routed back to ssh.
    fn park_ssh(&self, nodes: &[String]) {
        let snap = self.snapshot();
        for name in nodes {
            if let Some(node) = snap
                .nodes
                .get(name)
                .filter(|n| n.route() == Route::Konnectivity)
            {
                info!(node = %name, "migration finalized: closing the node's SSH session");
                node.tunnel.park();
            }
        }
    }

    fn set_route(&self, node: &str, route: Route) -> Result<Route, RouteChangeError> {
        let snap = self.snapshot();
        let entry = snap
            .nodes
            .get(node)
            .ok_or_else(|| RouteChangeError::UnknownNode(node.to_string()))?;
        if route == Route::Konnectivity && self.hub.is_none() {
            return Err(RouteChangeError::NoKonnectivity(node.to_string()));
        }
        if route == Route::Ssh && entry.ssh_parked() {
            info!(
                node,
                "routing back to ssh: reconnecting the parked SSH session"
            );
            entry.tunnel.unpark();
        }
        let previous = entry.route.send_replace(route);
        if previous != route {
            info!(node, from = %previous, to = %route, "route changed");
        }
        Ok(previous)
    }
}

impl Dial for Shared {
    async fn dial(&self, host: &str, port: u16) -> Result<Dialed, EgressError> {
        let snap = self.snapshot();
        let healthy = |name: &str| snap.nodes.get(name).is_some_and(NodeEntry::healthy);
        let decision = snap.table.resolve(host, port, healthy).inspect_err(|e| {
            if matches!(e, RouteError::Forbidden { .. }) {
                self.metrics.dial_forbidden();
            }
        })?;
        let node = &snap.nodes[&decision.node];
        let stream = node
            .dial(
                &decision.host,
                decision.port,
                snap.config.egress.dial_timeout,
            )
            .await?;
        let stream = crate::egress::idle::limit(stream, snap.config.egress.stream_idle_timeout);
        Ok(Dialed {
            stream,
            node: decision.node,
        })
    }
}

/// What a node looks like right now, for the demo.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Active path.
    pub route: Route,
    /// SSH tunnel state.
    pub state: TunnelState,
    /// SSH tunnel counters.
    pub stats: TunnelStats,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Nodes that are new.
    pub added: Vec<String>,
    /// Nodes that are gone (draining).
    pub removed: Vec<String>,
    /// Nodes whose settings changed (new tunnel; the old one drains).
    pub replaced: Vec<String>,
    /// Nodes kept as they were, sessions and streams included.
    pub kept: usize,
}

/// A running bridge.
pub struct Daemon {
    shared: Arc<Shared>,
    /// Cancelled at the very end: stops every tunnel, prober and the admin
    /// server.
    root: CancellationToken,
    life: Lifecycle,
    /// Drains of removed or replaced nodes' tunnels.
    drains: TaskTracker,
    drain_grace: Duration,
}

impl Daemon {
    /// Starts the tunnels and probers and serves the given listeners.
    /// `drain_grace` bounds how long open streams may run on after shutdown
    /// or a node's removal.
    pub fn start(
        config: Config,
        listeners: Listeners,
        drain_grace: Duration,
    ) -> Result<Daemon, StartError> {
        let root = CancellationToken::new();
        let store = migration::open_store(&config)?;
        let ctx = SshContext::load(&config.ssh)?;
        let probes = ProbeSettings::from_config(&config.health)?;
        let metrics = BridgeMetrics::new(env!("CARGO_PKG_VERSION"));
        let egress_handshakes = HandshakeLimit::new(
            "egress",
            config.egress.max_tls_handshakes,
            config.egress.tls_handshake_timeout,
            metrics.tls_handshake_counters("egress"),
        );
        let admin_handshakes = HandshakeLimit::new(
            "admin",
            config.admin.max_tls_handshakes,
            config.admin.tls_handshake_timeout,
            metrics.tls_handshake_counters("admin"),
        );
        let grpc_streams = config.egress.grpc_max_concurrent_streams;
        let agent_bounds =
            config
                .konnectivity
                .as_ref()
                .map(|k| konnectivity::server::AgentBounds {
                    handshakes: HandshakeLimit::new(
                        "agent",
                        k.max_tls_handshakes,
                        k.tls_handshake_timeout,
                        metrics.tls_handshake_counters("agent"),
                    ),
                    max_concurrent_streams: k.max_concurrent_streams,
                });
        let hub = config.konnectivity.as_ref().map(|k| {
            let options = konnectivity::Options {
                server_id: config.bridge.id.clone(),
                server_count: k.server_count,
                max_conn_buffer: konnectivity::Options::DEFAULT_MAX_CONN_BUFFER,
                stall_timeout: k.stall_timeout,
                dial_timeout: config.egress.dial_timeout,
                identity: konnectivity::identity::Guard::new(k.identity, metrics.registry()),
            };
            Hub::with_flow(options, konnectivity::Flow::from_config(k), &config.nodes)
        });
        let count = config.nodes.len();
        let nodes = config
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let phase = phase(&config, i, count);
                let spawn = Spawn {
                    ctx: &ctx,
                    root: &root,
                    probes: &probes,
                    metrics: &metrics,
                    hub: hub.as_ref(),
                    dial_timeout: config.egress.dial_timeout,
                    phase,
                };
                (n.name.clone(), NodeEntry::spawn(n, spawn))
            })
            .collect();
        let limits = Limits {
            max_request_head: config.egress.max_request_head,
            request_head_timeout: config.egress.request_head_timeout,
        };
        let snapshot = Snapshot {
            table: Table::new(&config.nodes, &config.egress.service_cidrs),
            config: Arc::new(config),
            probes,
            nodes,
        };
        let life = Lifecycle {
            stop_accepting: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        let egress_listeners = usize::from(listeners.http_connect_uds.is_some())
            + usize::from(listeners.http_connect_tcp.is_some())
            + usize::from(listeners.grpc_uds.is_some());
        let shared = Arc::new(Shared {
            current: RwLock::new(Arc::new(snapshot)),
            metrics,
            started: Instant::now(),
            stop_accepting: life.stop_accepting.clone(),
            egress_listeners,
            hub: hub.clone(),
            migration_routes: Default::default(),
            migration: OnceLock::new(),
        });
        let controller = migration::start(&shared, store, root.child_token());
        if let Err(why) = &controller {
            tracing::error!("{why}; nodes keep their configured routes");
        }
        let _ = shared.migration.set(controller);
        tokio::spawn(migration::park_if_finalized(shared.clone()));
        if let Some(l) = listeners.http_connect_uds {
            tokio::spawn(http_connect::serve_unix(
                l,
                shared.clone(),
                limits,
                life.clone(),
            ));
        }
        if let Some((l, acceptor)) = listeners.http_connect_tcp {
            tokio::spawn(http_connect::serve_tls(
                l,
                acceptor,
                egress_handshakes,
                shared.clone(),
                limits,
                life.clone(),
            ));
        }
        if let Some(l) = listeners.grpc_uds {
            tokio::spawn(crate::egress::grpc::serve_unix_bounded(
                l,
                shared.clone(),
                life.clone(),
                grpc_streams,
            ));
        }
        if let (Some(hub), Some((l, tls)), Some(bounds)) =
            (hub, listeners.konnectivity, agent_bounds)
        {
            let stop = root.child_token();
            tokio::spawn(async move {
                if let Err(e) = konnectivity::server::serve_bounded(l, tls, hub, stop, bounds).await
                {
                    tracing::error!(error = %e, "Konnectivity agent server stopped");
                }
            });
        }
        let tracker = life.tracker.clone();
        tokio::spawn(crate::memory::trim_after_streams_close(
            move || tracker.len(),
            crate::memory::trim,
            root.child_token(),
        ));
        if let Some(mut admin) = listeners.admin {
            if let crate::admin::AdminListener::Tcp(_, auth) = &mut admin {
                auth.handshakes = Some(admin_handshakes);
            }
            tokio::spawn(crate::admin::serve(
                admin,
                shared.clone(),
                root.child_token(),
            ));
        }
        Ok(Daemon {
            shared,
            root,
            life,
            drains: TaskTracker::new(),
            drain_grace,
        })
    }

    /// The nodes of the current configuration, in config order.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        let snap = self.shared.snapshot();
        snap.config
            .nodes
            .iter()
            .map(|spec| {
                let tunnel = &snap.nodes[&spec.name].tunnel;
                NodeStatus {
                    name: spec.name.clone(),
                    route: snap.nodes[&spec.name].route(),
                    state: tunnel.state(),
                    stats: tunnel.stats(),
                }
            })
            .collect()
    }

    /// Switches the path that serves `node`'s new streams. Streams already
    /// open finish on the path they started on. The route survives reloads
    /// unless the config's `route` for the node changes. Returns the
    /// previous route.
    pub fn set_route(&self, node: &str, route: Route) -> Result<Route, RouteChangeError> {
        self.shared.set_route(node, route)
    }

    /// The report document of this moment (what `/report` serves).
    pub fn report(&self) -> crate::report::Report {
        self.shared.report()
    }

    /// Stops accepting, lets open streams finish for up to the drain grace,
    /// then cuts what is left and closes every tunnel.
    pub async fn shutdown(self) {
        self.life.stop_accepting.cancel();
        self.life.tracker.close();
        // Tunnels take no new streams either: those without open streams
        // close now (their sshd sessions end at once), the others once
        // theirs end. The admin API keeps answering meanwhile.
        for node in self.shared.snapshot().nodes.values() {
            let tunnel = node.tunnel.clone();
            self.drains.spawn(async move { tunnel.drain().await });
        }
        let open = self.life.tracker.len();
        if open > 0 {
            info!(open, grace = ?self.drain_grace, "draining open streams");
        }
        if tokio::time::timeout(self.drain_grace, self.life.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                left = self.life.tracker.len(),
                "drain grace over; cutting the remaining streams"
            );
            self.life.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.life.tracker.wait()).await;
        }
        self.drains.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.drains.wait()).await;
        self.root.cancel();
    }

    /// A handle that cuts everything at once (a second signal), usable
    /// while [`Daemon::shutdown`] runs.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            tokens: [
                self.life.stop_accepting.clone(),
                self.life.abort.clone(),
                self.root.clone(),
            ],
        }
    }
}

/// Offset of node `i`'s first probe: nodes spread over one interval.
fn phase(config: &Config, i: usize, count: usize) -> Duration {
    let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    config.health.interval / count * u32::try_from(i).unwrap_or(0)
}

/// Cuts every stream and tunnel of a daemon at once.
#[derive(Clone)]
pub struct AbortHandle {
    tokens: [CancellationToken; 3],
}

impl AbortHandle {
    /// Stops accepting, cuts open streams and stops every tunnel.
    pub fn abort(&self) {
        self.tokens.iter().for_each(CancellationToken::cancel);
    }
}
