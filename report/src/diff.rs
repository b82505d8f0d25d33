//! Node-by-node comparison of two reports, with the rules that decide what
//! counts as a regression (documented in `docs/report.md`).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{NodeReport, PathReport, Report};

/// Limits beyond which a change is a regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// p99 probe latency regressed when after > before * this factor ...
    pub p99_factor: f64,
    /// ... and it grew by at least this many milliseconds.
    pub p99_floor_ms: f64,
    /// Failure ratio regressed when it rose by more than this (absolute).
    pub failure_ratio_delta: f64,
    /// Reconnects regressed when more than this many happened in between.
    pub reconnects: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            p99_factor: 1.5,
            p99_floor_ms: 5.0,
            failure_ratio_delta: 0.05,
            reconnects: 3,
        }
    }
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum What {
    /// The node is only in the after report (informational).
    NodeAdded,
    /// The node is only in the before report (regression).
    NodeRemoved,
    /// The path is only in the after report (informational).
    PathAdded,
    /// The path is only in the before report (regression).
    PathRemoved,
    /// The path's state changed.
    State,
    /// The probe failure ratio changed by more than the threshold.
    FailureRatio,
    /// The p99 probe latency changed by more than the factor.
    P99,
    /// More reconnects than the threshold.
    Reconnects,
    /// The node's route changed (informational).
    Route,
}

/// One change between the two reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Node name.
    pub node: String,
    /// `ssh` | `konnectivity`, or `null` for node-level changes.
    pub path: Option<String>,
    /// What changed.
    pub what: What,
    /// The value before, as shown to people; `null` when absent.
    pub before: Option<String>,
    /// The value after; `null` when absent.
    pub after: Option<String>,
    /// Whether this change makes `report diff` exit 3.
    pub is_regression: bool,
}

/// The result of [`diff`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    /// `generated_at` of the before report.
    pub before_generated_at: String,
    /// `generated_at` of the after report.
    pub after_generated_at: String,
    /// Nodes in either report.
    pub nodes_compared: usize,
    /// Nodes with at least one regression, sorted.
    pub regressed_nodes: Vec<String>,
    /// Every change, by node name, then path, then rule.
    pub changes: Vec<Change>,
    /// The one-line verdict ([`Diff::verdict`]).
    pub verdict: String,
}

impl Diff {
    /// Whether anything got worse.
    pub fn is_regression(&self) -> bool {
        !self.regressed_nodes.is_empty()
    }
}

impl What {
    /// The name used in JSON and tables (`failure_ratio`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            What::NodeAdded => "node_added",
            What::NodeRemoved => "node_removed",
            What::PathAdded => "path_added",
            What::PathRemoved => "path_removed",
            What::State => "state",
            What::FailureRatio => "failure_ratio",
            What::P99 => "p99",
            What::Reconnects => "reconnects",
            What::Route => "route",
        }
    }
}

impl Change {
    /// Short human description, e.g. `ssh up -> down`.
    pub fn describe(&self) -> String {
        let path = self.path.as_deref().unwrap_or("");
        let b = self.before.as_deref().unwrap_or("-");
        let a = self.after.as_deref().unwrap_or("-");
        match self.what {
            What::NodeAdded => "node added".into(),
            What::NodeRemoved => "node removed".into(),
            What::PathAdded => format!("{path} path added"),
            What::PathRemoved => format!("{path} path removed"),
            What::State => format!("{path} {b} -> {a}"),
            What::FailureRatio => format!("{path} failure ratio {b} -> {a}"),
            What::P99 => format!("{path} p99 {b} -> {a}"),
            What::Reconnects => format!("{path} reconnects {b} -> {a}"),
            What::Route => format!("route {b} -> {a}"),
        }
    }
}

/// Compares `before` and `after` node by node (matched by name).
pub fn diff(before: &Report, after: &Report, t: &Thresholds) -> Diff {
    // Counters reset when the daemon restarts; a different bridge has its
    // own counters. Then only the after report's absolute count is judged.
    let same_window = before.bridge.id == after.bridge.id
        && after.bridge.uptime_seconds >= before.bridge.uptime_seconds;
    let names: BTreeSet<&str> = before
        .nodes
        .iter()
        .chain(&after.nodes)
        .map(|n| n.name.as_str())
        .collect();
    let find = |r: &'_ Report, name: &str| -> Option<NodeReport> {
        r.nodes.iter().find(|n| n.name == name).cloned()
    };
    let mut changes = Vec::new();
    for name in &names {
        match (find(before, name), find(after, name)) {
            (Some(b), Some(a)) => node_changes(&b, &a, t, same_window, &mut changes),
            (Some(b), None) => changes.push(change(&b.name, None, What::NodeRemoved, true)),
            (None, Some(a)) => changes.push(change(&a.name, None, What::NodeAdded, false)),
            (None, None) => {}
        }
    }
    let regressed_nodes: Vec<String> = changes
        .iter()
        .filter(|c| c.is_regression)
        .map(|c| c.node.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let verdict = verdict(names.len(), &regressed_nodes, &changes);
    Diff {
        before_generated_at: before.generated_at.clone(),
        after_generated_at: after.generated_at.clone(),
        nodes_compared: names.len(),
        regressed_nodes,
        changes,
        verdict,
    }
}

fn node_changes(b: &NodeReport, a: &NodeReport, t: &Thresholds, same: bool, out: &mut Vec<Change>) {
    if b.route != a.route {
        let mut c = change(&b.name, None, What::Route, false);
        c.before = Some(b.route.to_string());
        c.after = Some(a.route.to_string());
        out.push(c);
    }
    path_changes(
        &b.name,
        "ssh",
        Some(&b.paths.ssh),
        Some(&a.paths.ssh),
        t,
        same,
        out,
    );
    let (bk, ak) = (b.paths.konnectivity.as_ref(), a.paths.konnectivity.as_ref());
    path_changes(&b.name, "konnectivity", bk, ak, t, same, out);
}

fn path_changes(
    node: &str,
    path: &str,
    b: Option<&PathReport>,
    a: Option<&PathReport>,
    t: &Thresholds,
    same_window: bool,
    out: &mut Vec<Change>,
) {
    let (b, a) = match (b, a) {
        (Some(b), Some(a)) => (b, a),
        (Some(_), None) => return out.push(change(node, Some(path), What::PathRemoved, true)),
        (None, Some(_)) => return out.push(change(node, Some(path), What::PathAdded, false)),
        (None, None) => return,
    };
    let mut push = |what, before: String, after: String, regression| {
        let mut c = change(node, Some(path), what, regression);
        c.before = Some(before);
        c.after = Some(after);
        out.push(c);
    };
    if b.state != a.state {
        let worse = a.state.severity() > b.state.severity();
        push(What::State, b.state.to_string(), a.state.to_string(), worse);
    }
    let (fb, fa) = (b.probe.failure_ratio, a.probe.failure_ratio);
    if (fa - fb).abs() > t.failure_ratio_delta {
        push(
            What::FailureRatio,
            format!("{fb:.2}"),
            format!("{fa:.2}"),
            fa > fb,
        );
    }
    if let (Some(pb), Some(pa)) = (b.probe.p99_ms, a.probe.p99_ms) {
        let grew = pa > pb * t.p99_factor && pa - pb >= t.p99_floor_ms;
        let shrank = pb > pa * t.p99_factor && pb - pa >= t.p99_floor_ms;
        if grew || shrank {
            push(What::P99, ms(pb), ms(pa), grew);
        }
    }
    let (rb, ra) = (b.reconnects, a.reconnects);
    let jumped = if same_window {
        ra.saturating_sub(rb) > t.reconnects
    } else {
        ra > t.reconnects
    };
    if jumped {
        push(What::Reconnects, rb.to_string(), ra.to_string(), true);
    }
}

fn change(node: &str, path: Option<&str>, what: What, is_regression: bool) -> Change {
    Change {
        node: node.to_string(),
        path: path.map(str::to_string),
        what,
        before: None,
        after: None,
        is_regression,
    }
}

/// Milliseconds as shown in diffs and tables: whole ms from 10 ms up.
pub(crate) fn ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}ms")
    } else {
        format!("{v:.1}ms")
    }
}

fn verdict(nodes: usize, regressed: &[String], changes: &[Change]) -> String {
    if regressed.is_empty() {
        return match changes.len() {
            0 => "OK: no regressions (no changes)".to_string(),
            1 => "OK: no regressions (1 informational change)".to_string(),
            n => format!("OK: no regressions ({n} informational changes)"),
        };
    }
    let mut s = format!(
        "REGRESSION: {} of {nodes} node{} got worse (",
        regressed.len(),
        if nodes == 1 { "" } else { "s" }
    );
    for (i, node) in regressed.iter().enumerate() {
        let what: Vec<String> = changes
            .iter()
            .filter(|c| c.is_regression && &c.node == node)
            .map(Change::describe)
            .collect();
        let sep = if i == 0 { "" } else { "; " };
        let _ = write!(s, "{sep}{node}: {}", what.join(", "));
    }
    s.push(')');
    s
}

#[cfg(test)]
mod tests;
