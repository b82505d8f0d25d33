//! Reloads: apply a new configuration without cutting streams of nodes
//! that stay, and retire the nodes that go.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sshbridge_config::{Config, Node};
use tracing::{info, warn};

use super::node::{NodeEntry, Spawn};
use super::{phase, Daemon, ReloadSummary, Snapshot, StartError};
use crate::health::ProbeSettings;
use crate::router::Table;
use crate::ssh::{SshContext, Tunnel};

impl Daemon {
    /// Applies a new configuration (the file's, merged with the discovered
    /// nodes: [`Daemon::reload`], [`Daemon::apply_inventory`]): new nodes
    /// connect, removed nodes drain and close, unchanged nodes keep their
    /// sessions and streams. Listener addresses are not rebound; changing
    /// them needs a restart.
    pub(super) fn apply(&self, config: Config) -> Result<ReloadSummary, StartError> {
        let ctx = SshContext::load(&config.ssh)?;
        let probes = ProbeSettings::from_config(&config.health)?;
        let old = self.shared.snapshot();
        if old.config.egress.http_connect_uds != config.egress.http_connect_uds
            || old.config.egress.http_connect_tcp != config.egress.http_connect_tcp
            || old.config.egress.grpc_uds != config.egress.grpc_uds
            || old.config.admin != config.admin
            || old.config.konnectivity != config.konnectivity
        {
            warn!(
                "egress or admin listener settings changed; they take effect at the next restart"
            );
        }
        if old.config.ssh.threads != config.ssh.threads {
            warn!(
                running = self.shards.len(),
                to = config.ssh.threads,
                "ssh.threads changed; it takes effect at the next restart"
            );
        }
        if old.config.ssh.sessions_per_node != config.ssh.sessions_per_node {
            warn!(
                from = old.config.ssh.sessions_per_node,
                to = config.ssh.sessions_per_node,
                "ssh.sessions_per_node changed; nodes connected already keep their sessions, \
                 nodes added from now on and every node after a restart use the new value"
            );
        }
        let reprobe = old.config.health != config.health
            || old.config.egress.dial_timeout != config.egress.dial_timeout;
        let mut summary = ReloadSummary::default();
        let mut nodes = HashMap::new();
        let count = config.nodes.len();
        for (i, spec) in config.nodes.iter().enumerate() {
            let spawn = Spawn {
                ctx: &ctx,
                root: &self.root,
                probes: &probes,
                metrics: &self.shared.metrics,
                hub: self.shared.hub.as_ref(),
                tasks: &self.tasks,
                shards: &self.shards,
                dial_timeout: config.egress.dial_timeout,
                phase: phase(&config, i, count),
            };
            let entry = match old.nodes.get(&spec.name) {
                // Same node; at most its configured route changed, which
                // the operator means to apply.
                Some(prev)
                    if prev.spec
                        == Node {
                            route: prev.spec.route,
                            ..spec.clone()
                        } =>
                {
                    prev.tunnel.set_context(ctx.clone());
                    summary.kept += 1;
                    let mut entry = if reprobe {
                        prev.watchers.cancel();
                        NodeEntry::around(spec, prev.tunnel.clone(), spawn).with_route_of(prev)
                    } else {
                        prev.clone()
                    };
                    if prev.spec.route != spec.route {
                        entry.route.send_replace(spec.route);
                    }
                    entry.spec = spec.clone();
                    entry
                }
                Some(prev) => {
                    summary.replaced.push(spec.name.clone());
                    self.retire(prev, false);
                    NodeEntry::spawn(spec, spawn)
                }
                None => {
                    summary.added.push(spec.name.clone());
                    NodeEntry::spawn(spec, spawn)
                }
            };
            self.keep_migration_route(&entry);
            nodes.insert(spec.name.clone(), entry);
        }
        for (name, prev) in &old.nodes {
            if !nodes.contains_key(name) {
                summary.removed.push(name.clone());
                self.retire(prev, true);
            }
        }
        if let Some(hub) = &self.shared.hub {
            hub.set_nodes(&config.nodes);
        }
        let snapshot = Snapshot {
            table: Table::new(&config.nodes, &config.egress.service_cidrs),
            config: Arc::new(config),
            probes,
            nodes,
        };
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
        self.shared.use_ssh_context(ctx);
        Ok(summary)
    }

    /// The migration store is the authority for the routes it set: a node
    /// it moved keeps that route through a reload, whatever the config's
    /// `route` says or whether the node's entry was rebuilt.
    fn keep_migration_route(&self, entry: &NodeEntry) {
        let name = &entry.spec.name;
        let held = self
            .shared
            .migration_routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied();
        if let Some(route) = held.filter(|r| *r != entry.route()) {
            warn!(
                node = %name, configured = %entry.spec.route, migration = %route,
                "the migration holds this node on {route}; the reload keeps it there \
                 (use `sshbridge migrate rollback {name}` to move it back)"
            );
            entry.route.send_replace(route);
        }
    }

    /// Stops a node that left (or changed in) the config: its prober stops
    /// now, its tunnel takes no new streams and closes once the open ones
    /// end or the drain grace is over.
    fn retire(&self, node: &NodeEntry, forget_metrics: bool) {
        node.watchers.cancel();
        if forget_metrics {
            self.shared.metrics.remove_node(&node.spec.name);
        }
        let (name, grace, tunnel): (String, Duration, Tunnel) = (
            node.spec.name.clone(),
            self.drain_grace,
            node.tunnel.clone(),
        );
        self.drains.spawn(async move {
            if tokio::time::timeout(grace, tunnel.drain()).await.is_err() {
                warn!(node = %name, "streams still open after the drain grace; closing the tunnel");
            }
            info!(node = %name, "tunnel closed after reload");
        });
    }
}
