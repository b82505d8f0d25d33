//! The report's `bridges` part (`[ha] status`): every bridge of the
//! control plane that publishes a status object, and per node what each
//! of them sees and how many of them its agents reach.

use serde::{Deserialize, Serialize};

/// Health across bridges. Every field has a default, so reports of later
/// v1 versions still parse.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BridgesReport {
    /// `[ha] status` namespace of the status objects.
    pub namespace: String,
    /// `[ha] status_interval`, seconds.
    pub interval_seconds: f64,
    /// Every bridge with a status object, this one included, by id.
    pub bridges: Vec<BridgeSeen>,
    /// This bridge's own writes.
    pub publish: PublishReport,
    /// Every node of this bridge, sorted by name.
    pub nodes: Vec<NodeAcross>,
}

/// One bridge as this one sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BridgeSeen {
    /// Its `[bridge] id`.
    pub id: String,
    /// Whether it is the bridge that wrote this report.
    pub this: bool,
    /// Why it is gone (it stopped publishing); absent while it is live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gone: Option<String>,
    /// Seconds since its object last changed, as seen here.
    pub age_seconds: f64,
}

/// This bridge's writes of its own status object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PublishReport {
    /// Writes since start.
    pub writes: u64,
    /// Bytes of the object's data at the last write.
    pub last_bytes: u64,
    /// The last write or list error, absent once one succeeds again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One node across bridges.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeAcross {
    /// Node name.
    pub name: String,
    /// Live bridges that hold at least one agent of the node.
    pub agents_reach: u32,
    /// Live bridges.
    pub live_bridges: u32,
    /// What each bridge sees, by bridge id.
    pub bridges: Vec<NodeOnBridge>,
}

/// One node as one bridge sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeOnBridge {
    /// The bridge's id.
    pub bridge: String,
    /// The bridge is gone: its view is stale and not counted.
    pub gone: bool,
    /// The bridge does not list the node.
    pub missing: bool,
    /// State of the SSH path there (`up`, `down`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh: Option<String>,
    /// State of the konnectivity path there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub konnectivity: Option<String>,
    /// The node's agents connected to that bridge.
    pub agents: u32,
    /// p99 latency of the konnectivity probes there, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub konnectivity_p99_ms: Option<f64>,
    /// The last error of a path that is not up there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The lines under the node table: the bridges, then per node what each
/// bridge sees.
pub(crate) fn table(b: &BridgesReport) -> String {
    let bridges: Vec<String> = b
        .bridges
        .iter()
        .map(|s| match (&s.gone, s.this) {
            (Some(why), _) => format!("{} GONE ({why})", s.id),
            (None, true) => format!("{} (this)", s.id),
            (None, false) => s.id.clone(),
        })
        .collect();
    let mut out = format!(
        "\nbridges ({}, every {}s): {}\n",
        b.namespace,
        b.interval_seconds,
        bridges.join(", ")
    );
    if let Some(e) = &b.publish.last_error {
        out.push_str(&format!("  status object not written or read: {e}\n"));
    }
    for n in &b.nodes {
        let each: Vec<String> = n.bridges.iter().map(one).collect();
        out.push_str(&format!(
            "  {}: agents reach {} of {} live bridges; {}\n",
            n.name,
            n.agents_reach,
            n.live_bridges,
            each.join("; ")
        ));
    }
    out
}

fn one(v: &NodeOnBridge) -> String {
    if v.gone {
        return format!("{} gone", v.bridge);
    }
    if v.missing {
        return format!("{} does not list it", v.bridge);
    }
    let mut s = format!(
        "{} ssh {}, konnectivity {}, {} agent{}",
        v.bridge,
        v.ssh.as_deref().unwrap_or("-"),
        v.konnectivity.as_deref().unwrap_or("-"),
        v.agents,
        if v.agents == 1 { "" } else { "s" }
    );
    if let Some(e) = &v.last_error {
        let one_line = e.replace(['\n', '\r'], " ");
        s.push_str(&format!(
            " ({})",
            one_line.chars().take(80).collect::<String>()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_each_bridge_and_what_it_sees() {
        let seen = |id: &str, this, gone: Option<&str>| BridgeSeen {
            id: id.into(),
            this,
            gone: gone.map(str::to_owned),
            age_seconds: 0.0,
        };
        let on = |bridge: &str, k: &str, agents| NodeOnBridge {
            bridge: bridge.into(),
            ssh: Some("up".into()),
            konnectivity: Some(k.into()),
            agents,
            last_error: (k != "up").then(|| "dial refused\nby peer".into()),
            ..NodeOnBridge::default()
        };
        let gone = NodeOnBridge {
            bridge: "cp-3".into(),
            gone: true,
            ..NodeOnBridge::default()
        };
        let b = BridgesReport {
            namespace: "kube-system".into(),
            interval_seconds: 5.0,
            bridges: vec![
                seen("cp-1", true, None),
                seen("cp-2", false, None),
                seen("cp-3", false, Some("no status for 16s")),
            ],
            publish: PublishReport::default(),
            nodes: vec![NodeAcross {
                name: "node-a".into(),
                agents_reach: 1,
                live_bridges: 2,
                bridges: vec![on("cp-1", "up", 1), on("cp-2", "down", 0), gone],
            }],
        };
        let t = table(&b);
        assert!(
            t.contains(
                "bridges (kube-system, every 5s): cp-1 (this), cp-2, cp-3 GONE (no status for 16s)"
            ),
            "{t}"
        );
        assert!(t.contains("node-a: agents reach 1 of 2 live bridges; cp-1 ssh up, konnectivity up, 1 agent; cp-2 ssh up, konnectivity down, 0 agents (dial refused by peer); cp-3 gone"), "{t}");
    }
}
