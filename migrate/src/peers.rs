//! Health across bridges: what the other bridges of a highly available
//! control plane say of a node, and whether that lets the node's shadow or
//! soak pass.
//!
//! Each bridge probes a node's paths from its own machine and publishes
//! what its prober sees ([`NodeHealth`], in a per-bridge status object the
//! daemon writes). A node may be fine from this bridge and broken from
//! another control-plane machine (a firewall rule, a dead route, agents that
//! reach only some bridges). The controller's own comparison covers this
//! bridge; [`judge`] covers the others: the node passes only when every
//! live bridge sees its konnectivity path `up` with at least one agent. A
//! bridge that stopped publishing is gone: it is left out, with a note, and
//! never counted as healthy. Without peers (a single bridge, or `[ha]
//! status` off) the verdict always passes and says nothing, so the
//! single-bridge decision is unchanged.

use serde::{Deserialize, Serialize};

/// One path of one node as a bridge's prober sees it now. Field names are
/// short on the wire: one status object holds every node of a bridge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PathView {
    /// The prober's state: `up`, `degraded`, `down`, `unknown`, `parked`.
    #[serde(rename = "st")]
    pub state: String,
    /// Probes in the prober's window.
    #[serde(rename = "n", default)]
    pub window: u32,
    /// Of those, failed probes.
    #[serde(rename = "f", default)]
    pub failures: u32,
    /// Median latency of the window's successful probes, ms.
    #[serde(rename = "p50", default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// p99 latency of the window's successful probes, ms.
    #[serde(rename = "p99", default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// The last error, kept only while the path is not up.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Its class (`dial_error`, `tls_error`, `io_error`, `http_error`,
    /// `timeout`, `transport`), kept only while the path is not up.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
}

/// One node as one bridge sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeHealth {
    /// The SSH path; `None` when the bridge has no such path.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<PathView>,
    /// The konnectivity path; `None` when the bridge has no agent server.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub konnectivity: Option<PathView>,
    /// Konnectivity agents of the node connected to this bridge.
    #[serde(rename = "a", default)]
    pub agents: u32,
}

impl NodeHealth {
    /// Why this view does not let the node move to konnectivity, or `None`
    /// when it does (path `up`, at least one agent).
    pub fn unhealthy(&self) -> Option<String> {
        let Some(k) = &self.konnectivity else {
            return Some("it has no konnectivity path (no [konnectivity] section)".into());
        };
        if k.state != "up" {
            let last = match (&k.error_class, &k.last_error) {
                (Some(c), Some(e)) => format!("; last error ({c}): {e}"),
                (None, Some(e)) => format!("; last error: {e}"),
                (Some(c), None) => format!("; last error: {c}"),
                (None, None) => String::new(),
            };
            return Some(format!(
                "its konnectivity path is {} ({} of {} recent probes failed){last}",
                k.state, k.failures, k.window
            ));
        }
        if self.agents == 0 {
            return Some("no agent of the node is connected to it".into());
        }
        None
    }
}

/// What one other bridge says of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// The bridge's `[bridge] id`.
    pub bridge: String,
    /// `Some(why)` when the bridge is gone (it stopped publishing).
    pub gone: Option<String>,
    /// Its view of the node; `None` when it does not list the node.
    pub node: Option<NodeHealth>,
}

/// The verdict of the other bridges on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerVerdict {
    /// Whether every live bridge sees the node healthy.
    pub passed: bool,
    /// Why not, naming each bridge and what it sees; empty when passed.
    pub reason: String,
    /// Bridges left out (gone), one note each.
    pub notes: Vec<String>,
}

/// The other bridges' verdict on `node`: passes only when every live
/// bridge sees it healthy ([`NodeHealth::unhealthy`]); gone bridges are
/// left out with a note. No peers: passes with nothing to say.
pub fn judge(node: &str, peers: &[PeerView]) -> PeerVerdict {
    let mut failed = Vec::new();
    let mut notes = Vec::new();
    for p in peers {
        if let Some(why) = &p.gone {
            notes.push(format!("bridge {} is gone ({why}), not counted", p.bridge));
            continue;
        }
        let why = match &p.node {
            None => Some("it does not list the node (check its config or inventory)".to_owned()),
            Some(h) => h.unhealthy(),
        };
        if let Some(why) = why {
            failed.push(format!("bridge {}: {why}", p.bridge));
        }
    }
    let reason = if failed.is_empty() {
        String::new()
    } else {
        format!(
            "node {node} is not healthy from every bridge: {}",
            failed.join("; ")
        )
    };
    PeerVerdict {
        passed: failed.is_empty(),
        reason,
        notes,
    }
}

/// `doc` within `budget` bytes of JSON: when it is larger, the last errors
/// are dropped (the states stay, so a broken path still fails the check).
/// Returns the document and whether it had to drop them.
pub fn fit<K: Ord + Serialize>(
    mut doc: std::collections::BTreeMap<K, NodeHealth>,
    budget: usize,
) -> (std::collections::BTreeMap<K, NodeHealth>, bool) {
    let size = serde_json::to_string(&doc).map_or(0, |s| s.len());
    if size <= budget {
        return (doc, false);
    }
    for h in doc.values_mut() {
        for p in [h.ssh.as_mut(), h.konnectivity.as_mut()]
            .into_iter()
            .flatten()
        {
            p.last_error = None;
        }
    }
    (doc, true)
}

impl PeerVerdict {
    /// This verdict folded into this bridge's `(passed, reason)`: a
    /// failure replaces a pass; notes are appended either way.
    pub fn fold(&self, passed: bool, reason: &str) -> (bool, String) {
        let mut out = if passed && !self.passed {
            self.reason.clone()
        } else {
            reason.to_owned()
        };
        for n in &self.notes {
            out.push_str("; ");
            out.push_str(n);
        }
        (passed && self.passed, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> NodeHealth {
        let up = PathView {
            state: "up".into(),
            window: 10,
            failures: 0,
            p50_ms: Some(1.0),
            p99_ms: Some(2.0),
            last_error: None,
            error_class: None,
        };
        NodeHealth {
            ssh: Some(up.clone()),
            konnectivity: Some(up),
            agents: 1,
        }
    }

    fn peer(bridge: &str, node: Option<NodeHealth>) -> PeerView {
        PeerView {
            bridge: bridge.into(),
            gone: None,
            node,
        }
    }

    #[test]
    fn healthy_on_two_of_three_bridges_does_not_pass_and_names_the_bridge() {
        let mut broken = healthy();
        let k = broken.konnectivity.as_mut().unwrap();
        k.state = "down".into();
        k.failures = 3;
        k.last_error = Some("dial 10.0.0.7:10250: no route to host".into());
        k.error_class = Some("dial_error".into());
        let peers = [peer("cp-2", Some(healthy())), peer("cp-3", Some(broken))];
        let v = judge("node-a", &peers);
        assert!(!v.passed);
        assert!(v.reason.contains("bridge cp-3"), "{}", v.reason);
        assert!(!v.reason.contains("cp-2"), "{}", v.reason);
        assert!(
            v.reason.contains("last error (dial_error): dial 10.0.0.7"),
            "{}",
            v.reason
        );
        let (passed, why) = v.fold(true, "local comparison fine");
        assert!(!passed);
        assert!(why.starts_with("node node-a is not healthy from every bridge"));
    }

    #[test]
    fn a_gone_bridge_is_left_out_with_a_note_and_never_counts() {
        let gone = PeerView {
            gone: Some("no status for 21s".into()),
            ..peer("cp-3", None)
        };
        let v = judge("node-a", &[peer("cp-2", Some(healthy())), gone]);
        assert!(v.passed, "{}", v.reason);
        assert_eq!(
            v.notes,
            ["bridge cp-3 is gone (no status for 21s), not counted"]
        );
        let (passed, why) = v.fold(true, "ok");
        assert!(passed);
        assert_eq!(
            why,
            "ok; bridge cp-3 is gone (no status for 21s), not counted"
        );
    }

    #[test]
    fn no_agent_or_no_view_fails_and_no_peers_changes_nothing() {
        let mut lonely = healthy();
        lonely.agents = 0;
        let v = judge("n", &[peer("b", Some(lonely))]);
        assert!(!v.passed && v.reason.contains("no agent"), "{}", v.reason);
        let v = judge("n", &[peer("b", None)]);
        assert!(
            !v.passed && v.reason.contains("does not list"),
            "{}",
            v.reason
        );
        let v = judge("n", &[]);
        assert!(v.passed && v.notes.is_empty());
        assert_eq!(v.fold(false, "local"), (false, "local".to_owned()));
        assert_eq!(v.fold(true, "local"), (true, "local".to_owned()));
    }

    #[test]
    fn five_thousand_nodes_fit_a_configmap_once_errors_are_dropped() {
        let mut view = healthy();
        for p in [view.ssh.as_mut(), view.konnectivity.as_mut()]
            .into_iter()
            .flatten()
        {
            (p.window, p.p50_ms, p.p99_ms) = (64, Some(12.3), Some(456.7));
        }
        let doc: std::collections::BTreeMap<String, NodeHealth> = (0..5000)
            .map(|i| (format!("node-{i:05}.zone-a"), view.clone()))
            .collect();
        let healthy = serde_json::to_string(&doc).unwrap().len();
        let mut broken = doc.clone();
        for h in broken.values_mut() {
            let k = h.konnectivity.as_mut().unwrap();
            k.state = "down".into();
            k.last_error = Some("e".repeat(160));
        }
        let worst = serde_json::to_string(&broken).unwrap().len();
        let fitted = serde_json::to_string(&fit(broken, 900 << 10).0)
            .unwrap()
            .len();
        eprintln!(
            "5,000 nodes: {healthy} bytes healthy ({} per node), {worst} with every error, {fitted} fitted",
            healthy / 5000
        );
        assert!(healthy < 900 << 10);
        assert!(worst > 900 << 10 && fitted < 900 << 10);
    }

    #[test]
    fn wire_form_is_short_and_round_trips() {
        let h = healthy();
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.len() < 120, "{} bytes: {json}", json.len());
        assert_eq!(serde_json::from_str::<NodeHealth>(&json).unwrap(), h);
    }
}
