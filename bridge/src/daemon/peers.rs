//! Health across bridges (`[ha] status = "kubernetes:NAMESPACE"`): this
//! bridge publishes what its probers see of each node in its own status
//! object, reads every other bridge's, and hands the migration the other
//! bridges' view of a node ([`Peers::views`]) and the report its part.
//!
//! A bridge is gone when its object has not changed for more than 3 of
//! its intervals, timed by this bridge's clock from the moment it saw the
//! object change (the publisher's own timestamp is used only at first
//! sight, so clock skew between machines does not make a live bridge look
//! gone). While this bridge cannot list the objects for more than 3
//! intervals, every other bridge's view is unknown, which fails the
//! migration's check rather than passing it on this bridge's word alone.

mod task;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use sshbridge_core::PathKind;
use sshbridge_kubeapi::status::StatusObject;
use sshbridge_migrate::{NodeHealth, PathView, PeerView};

use super::node::NodeEntry;
use super::Snapshot;
use crate::health::PathState;
use crate::report::{BridgeSeen, BridgesReport, NodeAcross, NodeOnBridge, PublishReport};

pub(super) use task::start;

/// A bridge silent for more than this many of its intervals is gone.
pub(crate) const GONE_AFTER_INTERVALS: u32 = 3;
/// Longest last error kept in a status object (one per unhealthy path).
const MAX_ERROR: usize = 160;

/// What this bridge knows of the others; empty when `[ha] status` is off.
#[derive(Default)]
pub(super) struct Peers {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// `Some` once the task runs: (namespace, interval).
    settings: Option<(String, Duration)>,
    own: String,
    bridges: BTreeMap<String, Seen>,
    /// When a list last succeeded.
    listed: Option<Instant>,
    publish: PublishReport,
}

/// One other bridge's object as last listed.
struct Seen {
    resource_version: String,
    interval: Duration,
    /// When the object was last seen to change (by this bridge's clock).
    changed: Instant,
    nodes: BTreeMap<String, NodeHealth>,
}

impl Seen {
    fn gone(&self, now: Instant) -> Option<String> {
        let silent = now.saturating_duration_since(self.changed);
        (silent > self.interval * GONE_AFTER_INTERVALS).then(|| {
            format!(
                "no status for {}s, publishes every {}s",
                silent.as_secs(),
                self.interval.as_secs_f64()
            )
        })
    }
}

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a fresh list of every status object (this bridge's own is
    /// skipped): objects whose version changed are live again from now.
    fn update(&self, objects: Vec<StatusObject>, now: Instant, wall: SystemTime) {
        let mut t = self.lock();
        t.listed = Some(now);
        let mut next = BTreeMap::new();
        for o in objects {
            if o.bridge == t.own {
                continue;
            }
            let prev = t.bridges.remove(&o.bridge);
            let changed = match prev {
                Some(p) if p.resource_version == o.resource_version => p.changed,
                Some(_) => now,
                // First sight: as old as the publisher says (never newer than now).
                None => {
                    let age = wall.duration_since(o.published).unwrap_or_default();
                    now.checked_sub(age).unwrap_or(now)
                }
            };
            let nodes = serde_json::from_str(&o.nodes).unwrap_or_else(|e| {
                tracing::warn!(bridge = %o.bridge, error = %e, "bridge status object: nodes.json unreadable; its view is empty");
                BTreeMap::new()
            });
            let seen = Seen {
                resource_version: o.resource_version,
                interval: o.interval,
                changed,
                nodes,
            };
            next.insert(o.bridge, seen);
        }
        t.bridges = next;
    }

    /// Why the other bridges' views are unknown now: no list for more
    /// than 3 intervals.
    fn unread(t: &Table, now: Instant) -> Option<String> {
        let (_, interval) = t.settings.as_ref()?;
        let limit = *interval * GONE_AFTER_INTERVALS;
        match t.listed {
            Some(at) if now.saturating_duration_since(at) <= limit => None,
            Some(at) => Some(format!(
                "status objects not read for {}s",
                now.saturating_duration_since(at).as_secs()
            )),
            None => Some("status objects not read yet".into()),
        }
        .map(|why| match &t.publish.last_error {
            Some(e) => format!("{why}: {e}"),
            None => why,
        })
    }

    /// What every other bridge says of `node`, for the migration. Off:
    /// nothing. Objects unread for too long: one view that fails.
    pub(super) fn views(&self, node: &str) -> Vec<PeerView> {
        let t = self.lock();
        let now = Instant::now();
        if let Some(why) = Self::unread(&t, now) {
            return vec![PeerView {
                bridge: format!("(every other bridge: {why})"),
                gone: None,
                node: None,
            }];
        }
        t.bridges
            .iter()
            .map(|(id, s)| PeerView {
                bridge: id.clone(),
                gone: s.gone(now),
                node: s.nodes.get(node).cloned(),
            })
            .collect()
    }

    /// The report's `bridges` part: this bridge's live view of `snap`
    /// next to every other bridge's; `None` when `[ha] status` is off.
    pub(super) fn report(&self, snap: &Snapshot) -> Option<BridgesReport> {
        let t = self.lock();
        let (namespace, interval) = t.settings.clone()?;
        let now = Instant::now();
        let mut bridges = vec![BridgeSeen {
            id: t.own.clone(),
            this: true,
            gone: None,
            age_seconds: 0.0,
        }];
        for (id, s) in &t.bridges {
            bridges.push(BridgeSeen {
                id: id.clone(),
                this: false,
                gone: s.gone(now),
                age_seconds: now.saturating_duration_since(s.changed).as_secs_f64(),
            });
        }
        bridges.sort_by(|a, b| a.id.cmp(&b.id));
        let own = document(snap);
        let nodes = own
            .iter()
            .map(|(name, mine)| {
                let mut each = vec![on_bridge(&t.own, false, Some(mine))];
                for (id, s) in &t.bridges {
                    each.push(on_bridge(id, s.gone(now).is_some(), s.nodes.get(name)));
                }
                each.sort_by(|a, b| a.bridge.cmp(&b.bridge));
                let live: Vec<_> = each.iter().filter(|v| !v.gone).collect();
                NodeAcross {
                    name: name.clone(),
                    agents_reach: live.iter().filter(|v| v.agents > 0).count() as u32,
                    live_bridges: live.len() as u32,
                    bridges: each,
                }
            })
            .collect();
        let mut publish = t.publish.clone();
        if let Some(why) = Self::unread(&t, now) {
            publish.last_error = Some(why);
        }
        Some(BridgesReport {
            namespace,
            interval_seconds: interval.as_secs_f64(),
            bridges,
            publish,
            nodes,
        })
    }
}

fn on_bridge(bridge: &str, gone: bool, h: Option<&NodeHealth>) -> NodeOnBridge {
    let state = |p: &Option<PathView>| p.as_ref().map(|p| p.state.clone());
    let error = |p: &Option<PathView>| p.as_ref().and_then(|p| p.last_error.clone());
    NodeOnBridge {
        bridge: bridge.to_owned(),
        gone,
        missing: h.is_none(),
        ssh: h.and_then(|h| state(&h.ssh)),
        konnectivity: h.and_then(|h| state(&h.konnectivity)),
        agents: h.map_or(0, |h| h.agents),
        konnectivity_p99_ms: h.and_then(|h| h.konnectivity.as_ref()?.p99_ms),
        last_error: h.and_then(|h| error(&h.konnectivity).or_else(|| error(&h.ssh))),
    }
}

/// This bridge's view of every node of `snap`, as published.
pub(super) fn document(snap: &Snapshot) -> BTreeMap<String, NodeHealth> {
    snap.nodes
        .iter()
        .map(|(name, entry)| (name.clone(), node_health(name, entry)))
        .collect()
}

fn node_health(name: &str, entry: &NodeEntry) -> NodeHealth {
    let view = |kind: PathKind| {
        let p = entry.paths.get(&kind)?;
        let h = p.prober.snapshot();
        let state = p.state();
        let round = |v: Option<f64>| v.map(|ms| (ms * 10.0).round() / 10.0);
        Some(PathView {
            state: state.as_str().to_owned(),
            window: h.window_size,
            failures: h.window_failures,
            p50_ms: round(h.latency_p50_ms),
            p99_ms: round(h.latency_p99_ms),
            last_error: h
                .last_error
                .filter(|_| state != PathState::Up)
                .map(|e| e.chars().take(MAX_ERROR).collect()),
            error_class: h
                .last_error_class
                .filter(|_| state != PathState::Up)
                .map(str::to_owned),
        })
    };
    let agents = entry.hub.as_ref().map_or(0, |hub| {
        hub.agents(name).iter().filter(|a| !a.draining).count()
    });
    NodeHealth {
        ssh: view(PathKind::Ssh),
        konnectivity: view(PathKind::Konnectivity),
        agents: u32::try_from(agents).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests;
