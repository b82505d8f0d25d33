//! Preflight and plan: which nodes are ready, in which batches they move,
//! and what every step will check. Pure: it reads node views and the saved
//! state and changes nothing.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fleet::{Fleet, NodeView};
use crate::settings::{duration_str, BatchSpec, Settings};
use crate::state::MigrationState;

/// A node left out of the plan, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    /// Node name.
    pub node: String,
    /// Why, and what to do.
    pub reason: String,
}

/// What each step checks, so the operator knows before it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    /// Probes per path in shadow.
    pub shadow_probes: u32,
    /// Largest tolerated konnectivity failure ratio (shadow and soak).
    pub max_failure_ratio: f64,
    /// Largest tolerated konnectivity p99 / ssh p99 (shadow).
    pub max_latency_ratio: f64,
    /// How long each cut-over node is watched.
    #[serde(with = "duration_str")]
    pub soak: Duration,
    /// Pause between probes.
    #[serde(with = "duration_str")]
    pub probe_interval: Duration,
}

/// The rollout `apply` would start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Batch size as asked for.
    pub batch_size: BatchSpec,
    /// Nodes per batch it resolves to.
    pub per_batch: usize,
    /// Nodes the bridge knows.
    pub total_nodes: usize,
    /// Node names per batch, in order.
    pub batches: Vec<Vec<String>>,
    /// Nodes that cannot move now; they stay on ssh.
    pub not_ready: Vec<Excluded>,
    /// Nodes already migrated or in a step.
    pub skipped: Vec<Excluded>,
    /// What every step checks.
    pub checks: Checks,
}

impl Plan {
    /// Every node the plan moves, in order.
    pub fn nodes(&self) -> impl Iterator<Item = &String> {
        self.batches.iter().flatten()
    }
}

/// Why a node cannot start its migration now, or `None` when it can: its
/// SSH path is up and at least one of its agents is connected and healthy.
pub fn not_ready_reason(v: &NodeView) -> Option<String> {
    if !v.ssh_up {
        Some("its SSH path is down; the fallback must work before a cutover".into())
    } else if v.agents_connected == 0 {
        Some(
            "no Konnectivity agent is connected for it; deploy the agent \
             (sshbridge manifests konnectivity-agent) and check its --agent-identifiers"
                .into(),
        )
    } else if v.agents_healthy == 0 {
        Some(format!(
            "{} agent(s) connected but none healthy; check the agent's logs",
            v.agents_connected
        ))
    } else {
        None
    }
}

/// The plan for `fleet` as it is now, ignoring any saved state.
pub fn plan<F: Fleet>(fleet: &F, settings: &Settings, only: Option<&[String]>) -> Plan {
    plan_nodes(&fleet.nodes(), settings, only, &MigrationState::default())
}

/// The plan for these node views, given the saved state (nodes already
/// `done` or in a step are skipped).
pub fn plan_nodes(
    views: &[NodeView],
    settings: &Settings,
    only: Option<&[String]>,
    state: &MigrationState,
) -> Plan {
    let mut not_ready = Vec::new();
    let mut skipped = Vec::new();
    if let Some(only) = only {
        for name in only.iter().filter(|n| !views.iter().any(|v| &v.name == *n)) {
            not_ready.push(Excluded {
                node: name.clone(),
                reason: "no such node in the bridge's config".into(),
            });
        }
    }
    let mut ready = Vec::new();
    for v in views {
        if only.is_some_and(|o| !o.contains(&v.name)) {
            continue;
        }
        let phase = state.phase_of(&v.name);
        let exclude = |reason: String| Excluded {
            node: v.name.clone(),
            reason,
        };
        if phase == crate::state::NodePhase::Done {
            skipped.push(exclude("already done".into()));
        } else if phase.in_flight() {
            skipped.push(exclude(format!("already in {phase}")));
        } else if let Some(reason) = not_ready_reason(v) {
            not_ready.push(exclude(reason));
        } else {
            ready.push(v.name.clone());
        }
    }
    let per_batch = settings.batch_size.per_batch(views.len());
    Plan {
        batch_size: settings.batch_size,
        per_batch,
        total_nodes: views.len(),
        batches: ready.chunks(per_batch).map(<[String]>::to_vec).collect(),
        not_ready,
        skipped,
        checks: Checks {
            shadow_probes: settings.shadow_probes,
            max_failure_ratio: settings.max_failure_ratio,
            max_latency_ratio: settings.max_latency_ratio,
            soak: settings.soak,
            probe_interval: settings.probe_interval,
        },
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let moving: usize = self.batches.iter().map(Vec::len).sum();
        writeln!(
            f,
            "Plan: {moving} of {} nodes in {} batch(es) of {} (batch size {})",
            self.total_nodes,
            self.batches.len(),
            self.per_batch,
            self.batch_size
        )?;
        for (i, b) in self.batches.iter().enumerate() {
            writeln!(f, "  batch {}: {}", i + 1, b.join(", "))?;
        }
        for (title, list) in [
            ("Not ready (stay on ssh)", &self.not_ready),
            ("Skipped", &self.skipped),
        ] {
            if !list.is_empty() {
                writeln!(f, "{title}:")?;
                for e in list {
                    writeln!(f, "  {}: {}", e.node, e.reason)?;
                }
            }
        }
        let c = &self.checks;
        writeln!(f, "Each node:")?;
        writeln!(
            f,
            "  shadow:  {} probes per path, {} apart; konnectivity passes with failure ratio <= {}% and p99 <= {}x ssh p99",
            c.shadow_probes,
            humantime::format_duration(c.probe_interval),
            c.max_failure_ratio * 100.0,
            c.max_latency_ratio
        )?;
        writeln!(
            f,
            "  cutover: new streams go over konnectivity; open ssh streams finish, the ssh session stays up"
        )?;
        write!(
            f,
            "  soak:    {}; a dial or probe failure ratio above {}% rolls the node back to ssh and pauses the rollout",
            humantime::format_duration(c.soak),
            c.max_failure_ratio * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NodePhase;
    use sshbridge_config::Route;

    fn view(name: &str, ssh_up: bool, agents: u32, healthy: u32) -> NodeView {
        NodeView {
            name: name.into(),
            ssh_up,
            agents_connected: agents,
            agents_healthy: healthy,
            route: Route::Ssh,
        }
    }

    fn settings(b: BatchSpec) -> Settings {
        Settings {
            batch_size: b,
            shadow_probes: 5,
            max_failure_ratio: 0.0,
            max_latency_ratio: 2.0,
            soak: Duration::from_secs(120),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn batches_by_percent_of_all_nodes_and_names_the_unready() {
        let views: Vec<_> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| view(n, true, 1, 1))
            .chain([
                view("no-agent", true, 0, 0),
                view("sick-agent", true, 2, 0),
                view("ssh-down", false, 1, 1),
            ])
            .collect();
        let p = plan_nodes(
            &views,
            &settings(BatchSpec::Percent(25.0)),
            None,
            &MigrationState::default(),
        );
        assert_eq!(p.per_batch, 2);
        assert_eq!(p.batches, [vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
        let reasons: Vec<_> = p.not_ready.iter().map(|e| e.node.as_str()).collect();
        assert_eq!(reasons, ["no-agent", "sick-agent", "ssh-down"]);
        assert!(p.not_ready[0].reason.contains("no Konnectivity agent"));
        assert!(p.not_ready[1].reason.contains("none healthy"));
        assert!(p.not_ready[2].reason.contains("SSH path is down"));
        let text = p.to_string();
        assert!(text.contains("batch 3: e"), "{text}");
        assert!(text.contains("no-agent: no Konnectivity agent"), "{text}");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["checks"]["soak"], "2m");
    }

    #[test]
    fn subset_and_saved_state_are_respected() {
        let views: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| view(n, true, 1, 1))
            .collect();
        let mut state = MigrationState::default();
        for to in [
            NodePhase::Shadow,
            NodePhase::Cutover,
            NodePhase::Soak,
            NodePhase::Done,
        ] {
            state.transition("a", to, "t").unwrap();
        }
        state.transition("b", NodePhase::Shadow, "t").unwrap();
        let only = ["a".to_string(), "b".into(), "c".into(), "zz".into()];
        let p = plan_nodes(&views, &settings(BatchSpec::Count(5)), Some(&only), &state);
        assert_eq!(p.batches, [vec!["c"]]);
        assert_eq!(p.skipped[0].reason, "already done");
        assert_eq!(p.skipped[1].reason, "already in shadow");
        assert_eq!(p.not_ready[0].node, "zz");
    }
}
