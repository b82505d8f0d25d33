//! The report's `inventory` part: which nodes the Kubernetes API gave, the
//! ones it lists that the bridge does not serve (and why), and the watch.

use serde::{Deserialize, Serialize};

/// Where the nodes came from (`[inventory]`). Every field has a default,
/// so a report of a later v1 version whose `inventory` object differs
/// still parses (keys may be added within v1; readers ignore what they do
/// not know and default what is missing).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InventoryReport {
    /// `[inventory] source`: `static` or `kubernetes`.
    pub source: String,
    /// Nodes from `[[node]]` entries (they override discovered ones of the
    /// same name).
    pub static_nodes: Vec<String>,
    /// Nodes served because the API lists them, sorted by name.
    pub discovered_nodes: Vec<String>,
    /// Nodes the API lists that the bridge does not serve, sorted by name.
    pub unservable: Vec<Unservable>,
    /// The Node watch.
    pub watch: WatchReport,
}

/// A Node the API lists that the bridge does not serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unservable {
    /// Node name.
    pub name: String,
    /// Why, naming the field or file and the fix.
    pub reason: String,
}

/// The state of the Node watch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WatchReport {
    /// The first full list has arrived.
    pub synced: bool,
    /// When the API last answered, RFC 3339 UTC; absent before that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<String>,
    /// Since when the watch fails, RFC 3339 UTC; absent while it works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    /// The last watch error (kept after recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Watch failures since start (each retried).
    pub restarts: u64,
}

/// The inventory lines under the node table: counts by source, the watch,
/// and each Node the bridge does not serve with its reason.
pub(crate) fn table(inv: &InventoryReport) -> String {
    let w = &inv.watch;
    let mut out = format!(
        "\ninventory ({}): {} static, {} from kubernetes, {} not served; watch {}, last sync {}, {} restart{}\n",
        inv.source,
        inv.static_nodes.len(),
        inv.discovered_nodes.len(),
        inv.unservable.len(),
        match (&w.failing_since, w.synced) {
            (Some(since), _) => format!("failing since {since}"),
            (None, true) => "ok".to_string(),
            (None, false) => "not synced yet".to_string(),
        },
        w.last_sync.as_deref().unwrap_or("never"),
        w.restarts,
        if w.restarts == 1 { "" } else { "s" },
    );
    if let Some(e) = w
        .last_error
        .as_deref()
        .filter(|_| w.failing_since.is_some())
    {
        out.push_str(&format!("  watch error: {e}\n"));
    }
    for u in &inv.unservable {
        out.push_str(&format!("  not served: {}: {}\n", u.name, u.reason));
    }
    out
}
