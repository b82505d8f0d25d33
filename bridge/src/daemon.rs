//! The daemon: one SSH tunnel and prober per node, the egress frontends,
//! the admin API, reloads and the drain on shutdown.
//!
//! State that a reload replaces lives in one [`Snapshot`] (config, routing
//! table, nodes) swapped atomically; a stream that already resolved keeps
//! the tunnel it dialed through, so a reload never cuts open streams of
//! nodes that stay.

mod certs;
mod inventory;
pub mod listen;
mod migration;
mod migration_api;
mod migration_shared;
mod node;
mod observe;
mod peers;
mod reload;
mod route;
mod shards;
mod status;
mod stop;
mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use sshbridge_config::{Config, Route};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::egress::http_connect::{self, Lifecycle, Limits};
use crate::handshake::HandshakeLimit;
use crate::health::{HealthSetupError, ProbeSettings};
use crate::konnectivity::{self, Hub};
use crate::metrics::{BridgeMetrics, Listener};
use crate::router::Table;
use crate::ssh::{SshContext, SshSetupError};
use crate::tasks::Tasks;

pub use listen::{BindError, Listeners};
use node::{NodeEntry, Spawn};
pub use status::{AbortHandle, NodeStatus};

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
    /// A thread for the SSH sessions could not start.
    #[error(transparent)]
    Shards(#[from] shards::ShardError),
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
    /// Where the nodes come from (`[inventory]`) and the Node watch.
    inventory: inventory::InventoryState,
    /// The `[ssh]` context in use (replaced by reloads and by the
    /// certificate watch), and its certificate's metrics.
    ssh: std::sync::Mutex<Arc<SshContext>>,
    certs: certs::CertMetrics,
    /// The other bridges' health of our nodes (`[ha] status`).
    peers: peers::Peers,
}

impl Shared {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
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
    /// Every long-running task of the daemon (listeners, servers, probers),
    /// waited for at the end of shutdown.
    tasks: Tasks,
    life: Lifecycle,
    /// Drains of removed or replaced nodes' tunnels.
    drains: TaskTracker,
    /// The threads the nodes' tunnels run on. Declared after `tasks`
    /// and stopped only when the daemon is dropped, after shutdown
    /// waited for their tasks.
    shards: shards::Shards,
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
        let tasks = Tasks::new();
        let file = config.clone();
        let merged = inventory::merge(&file, &Default::default());
        let config = merged.config;
        // A shared record (`kubernetes:`) is read by the "migration
        // controller" task below; a file store is opened and locked here.
        let record = migration_shared::record(&config);
        let store = match record {
            None => Some(migration::open_store(&config)?),
            Some(_) => None,
        };
        let ctx = SshContext::load(&config.ssh)?;
        let shards = shards::Shards::start(config.ssh.threads)?;
        let probes = ProbeSettings::from_config(&config.health)?;
        let metrics = BridgeMetrics::new(env!("CARGO_PKG_VERSION"));
        let metrics_for_inventory = metrics.clone();
        let cert_metrics = certs::CertMetrics::register(metrics.registry());
        cert_metrics.set(&ctx);
        certs::warn_if_expiring(&ctx);
        let egress_handshakes = HandshakeLimit::new(
            "egress",
            config.egress.max_tls_handshakes,
            config.egress.tls_handshake_timeout,
            metrics.tls_handshake_counters(Listener::Egress),
        );
        let admin_handshakes = HandshakeLimit::new(
            "admin",
            config.admin.max_tls_handshakes,
            config.admin.tls_handshake_timeout,
            metrics.tls_handshake_counters(Listener::Admin),
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
                        metrics.tls_handshake_counters(Listener::Agent),
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
                identity: tokens::guard(k, config.kubernetes.as_ref(), metrics.registry()),
            };
            let hub = Hub::with_flow(options, konnectivity::Flow::from_config(k), &config.nodes);
            hub.set_events(Arc::new(metrics.clone()));
            hub
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
                    tasks: &tasks,
                    shards: &shards,
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
        let life = Lifecycle::default();
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
            inventory: inventory::InventoryState::start(
                &file,
                merged.view,
                &tasks,
                &root,
                &metrics_for_inventory,
            ),
            ssh: std::sync::Mutex::new(ctx.clone()),
            certs: cert_metrics,
            peers: Default::default(),
        });
        peers::start(&shared, &tasks, root.child_token());
        tasks.spawn(
            "ssh certificate watch",
            certs::watch(shared.clone(), root.child_token()),
        );
        if let Some(store) = store {
            // Not a child of `root`: the "migration controller" task below
            // stops it with `Controller::shutdown` and waits for its watchers.
            let controller = migration::start(&shared, store, CancellationToken::new());
            if let Err(why) = &controller {
                tracing::error!("{why}; nodes keep their configured routes");
            }
            let _ = shared.migration.set(controller);
            tasks.spawn(
                "migration controller",
                migration::stop_on(shared.clone(), root.clone()),
            );
            tasks.spawn(
                "migration restart check",
                migration::park_if_finalized(shared.clone()),
            );
        } else if let Some(record) = record {
            tasks.spawn(
                "migration controller",
                migration_shared::run(shared.clone(), record, root.clone()),
            );
        }
        if let Some(l) = listeners.http_connect_uds {
            tasks.spawn(
                "egress listener (HTTP CONNECT, unix)",
                http_connect::serve_unix(l, shared.clone(), limits, life.clone()),
            );
        }
        if let Some((l, acceptor)) = listeners.http_connect_tcp {
            tasks.spawn(
                "egress listener (HTTP CONNECT, TLS)",
                http_connect::serve_tls(
                    l,
                    acceptor,
                    egress_handshakes,
                    shared.clone(),
                    limits,
                    life.clone(),
                ),
            );
        }
        if let Some(l) = listeners.grpc_uds {
            tasks.spawn(
                "egress listener (gRPC, unix)",
                crate::egress::grpc::serve_unix_bounded(
                    l,
                    shared.clone(),
                    life.clone(),
                    grpc_streams,
                ),
            );
        }
        if let (Some(hub), Some((l, tls)), Some(bounds)) =
            (hub, listeners.konnectivity, agent_bounds)
        {
            let (stop, own) = (root.child_token(), tasks.clone());
            tasks.spawn("Konnectivity agent server", async move {
                let served = konnectivity::server::serve_bounded(l, tls, hub, stop, bounds, &own);
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "Konnectivity agent server stopped");
                }
            });
        }
        let finished = life.finished.clone();
        tasks.spawn(
            "memory trim",
            crate::memory::trim_after_streams_close(
                move || finished.load(std::sync::atomic::Ordering::Relaxed),
                crate::memory::trim,
                root.child_token(),
            ),
        );
        if let Some(mut admin) = listeners.admin {
            if let crate::admin::AdminListener::Tcp(_, auth) = &mut admin {
                auth.handshakes = Some(admin_handshakes);
            }
            tasks.spawn(
                "admin server",
                crate::admin::serve(admin, shared.clone(), root.child_token(), tasks.clone()),
            );
        }
        Ok(Daemon {
            shared,
            root,
            tasks,
            life,
            drains: TaskTracker::new(),
            drain_grace,
            shards,
        })
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
}

/// Offset of node `i`'s first probe: nodes spread over one interval.
fn phase(config: &Config, i: usize, count: usize) -> Duration {
    let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    config.health.interval / count * u32::try_from(i).unwrap_or(0)
}
