//! sshbridge-report: the tunnel health report: the versioned JSON document served at
//! `/report` on the admin listener, read back from files by
//! `sshbridge report diff`, compared node by node ([`diff`]) and rendered
//! as a table or JSON ([`render`]).
//!
//! Key order is part of the contract: fields serialize in declaration
//! order, nodes are sorted by name and maps are `BTreeMap`s, so two reports
//! of the same cluster diff cleanly as text. The schema is documented in
//! `docs/report.md`.
//!
//! Not here: collecting the numbers (the daemon fills [`Report`] from its
//! health and metrics state), serving HTTP (the admin server) and fetching
//! it (the admin client in `sshbridge`).

#![warn(missing_docs)]

mod bridges;
mod certificate;
pub mod diff;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod inventory;
pub mod render;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use bridges::{BridgeSeen, BridgesReport, NodeAcross, NodeOnBridge, PublishReport};
pub use certificate::CertificateReport;
pub use diff::{diff, Change, Diff, Thresholds, What};
pub use inventory::{InventoryReport, Unservable, WatchReport};
pub use sshbridge_config::Route;
pub use sshbridge_core::PathState;

/// The schema this sshbridge writes and reads.
pub const SCHEMA: &str = "sshbridge.report/v1";

/// Prefix shared by every version of the report schema.
const SCHEMA_PREFIX: &str = "sshbridge.report/v";

/// One report: the bridge, its totals and every node with its paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`] when written by this version.
    pub schema: String,
    /// When the report was taken, RFC 3339 UTC with seconds (`...Z`).
    pub generated_at: String,
    /// Which bridge wrote it.
    pub bridge: BridgeInfo,
    /// Sums over all nodes and paths.
    pub totals: Totals,
    /// Every configured node, sorted by name.
    pub nodes: Vec<NodeReport>,
    /// Where the nodes came from, and the API's nodes the bridge cannot
    /// serve; absent with `[inventory] source = "static"` (and in reports
    /// of versions before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventoryReport>,
    /// The SSH user certificate the bridge logs in with and its expiry;
    /// absent without `[ssh] certificate` (and in reports of versions
    /// before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_certificate: Option<CertificateReport>,
    /// Health across bridges (`[ha] status`); absent when it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridges: Option<BridgesReport>,
}

/// Identity and age of the bridge that wrote a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgeInfo {
    /// `[bridge].id`.
    pub id: String,
    /// sshbridge version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// Seconds since the daemon started; counters reset with it.
    pub uptime_seconds: u64,
}

/// Bridge-wide sums, derived from the nodes by [`Totals::from_nodes`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Nodes in the report.
    pub nodes: u64,
    /// Paths (of any node, either kind) whose state is `up`.
    pub paths_up: u64,
    /// Paths whose state is `down`.
    pub paths_down: u64,
    /// Streams open right now.
    pub open_streams: u64,
    /// Bytes sent towards the nodes since start.
    pub bytes_sent: u64,
    /// Bytes received from the nodes since start.
    pub bytes_received: u64,
    /// Dials that succeeded since start.
    pub dials_ok: u64,
    /// Dials that failed since start, any reason.
    pub dials_failed: u64,
}

/// One node and its paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// `[[node]].name`.
    pub name: String,
    /// `[[node]].address` (the node IP).
    pub address: String,
    /// Which path serves this node's traffic right now.
    pub route: Route,
    /// Both paths of the node.
    pub paths: Paths,
}

/// The paths of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paths {
    /// The SSH tunnel (every node has one).
    pub ssh: PathReport,
    /// The Konnectivity agent stream; `null` while the node has none.
    pub konnectivity: Option<PathReport>,
}

/// Health and traffic of one path of one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PathReport {
    /// Health after hysteresis (`down_after` / `up_after`).
    pub state: PathState,
    /// When `state` last changed (RFC 3339), `null` if it never did.
    pub since: Option<String>,
    /// The most recent probe or dial error, `null` if none since start.
    pub last_error: Option<String>,
    /// Probe latency and failures over the sliding window.
    pub probe: ProbeStats,
    /// Failed probes in a row, ending with the latest probe.
    pub consecutive_failures: u32,
    /// Times the path was re-established since start.
    pub reconnects: u64,
    /// Streams open on this path right now.
    pub open_streams: u64,
    /// Bytes sent towards the node on this path since start.
    pub bytes_sent: u64,
    /// Bytes received from the node on this path since start.
    pub bytes_received: u64,
    /// Dial outcomes on this path since start.
    pub dials: DialStats,
    /// Konnectivity only, while agents are connected: `credit` when every
    /// agent of the node speaks the credit extension, `compatibility` when
    /// none does, `mixed` otherwise (docs/konnectivity.md). Absent for SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_control: Option<String>,
    /// Konnectivity only: the node's agents connected to this bridge
    /// (distinct agent IDs; with several bridges, each agent should be on
    /// every one). Absent for SSH and in reports of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<u64>,
}

/// Probe statistics over the sliding window of recent probes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeStats {
    /// Median latency of successful probes, ms; `null` without any.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of successful probes, ms; `null` without any.
    pub p99_ms: Option<f64>,
    /// Probes in the window (successful and failed).
    pub window: u32,
    /// Failed probes in the window.
    pub failures_in_window: u32,
    /// `failures_in_window / window`, 0 when the window is empty.
    pub failure_ratio: f64,
}

/// Dial outcomes of one path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DialStats {
    /// Successful dials.
    pub ok: u64,
    /// Failed dials by reason (e.g. `refused`, `timeout`, `unavailable`).
    pub failed: BTreeMap<String, u64>,
}

/// Why a report could not be read. Every message names the file (or
/// address) it came from.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file could not be read.
    #[error("cannot read report {file}: {error}")]
    Read {
        /// File name as given.
        file: String,
        /// What the OS said (kept out of `source()`: the message has it).
        error: std::io::Error,
    },
    /// Not valid JSON, or a field is missing or has the wrong type.
    #[error("{file}:{line}:{column}: not a valid sshbridge report: {message}")]
    Json {
        /// File name as given.
        file: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What serde found.
        message: String,
    },
    /// A later schema version than [`SCHEMA`].
    #[error(
        "{file}: report schema {found:?} was written by a newer sshbridge; \
         this one reads {SCHEMA:?}: compare it with that newer sshbridge"
    )]
    NewerSchema {
        /// File name as given.
        file: String,
        /// The `schema` value found.
        found: String,
    },
    /// Some other JSON document.
    #[error("{file}: not an sshbridge report (schema {found:?}, expected {SCHEMA:?})")]
    WrongSchema {
        /// File name as given.
        file: String,
        /// The `schema` value found (empty when absent).
        found: String,
    },
}

impl Report {
    /// Builds a report taken at `now`: sorts the nodes by name and computes
    /// the totals from them.
    pub fn new(bridge: BridgeInfo, mut nodes: Vec<NodeReport>, now: SystemTime) -> Report {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Report {
            schema: SCHEMA.to_string(),
            generated_at: rfc3339(now),
            bridge,
            totals: Totals::from_nodes(&nodes),
            nodes,
            inventory: None,
            ssh_certificate: None,
            bridges: None,
        }
    }

    /// The report as pretty JSON with a trailing newline, keys in the
    /// documented order.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a report always serializes");
        text.push('\n');
        text
    }

    /// Parses a report; `file` names its origin in errors.
    pub fn from_json(text: &str, file: &str) -> Result<Report, ReportError> {
        // Check the schema first, so a newer report is named as such rather
        // than failing on whichever field changed.
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| json_error(file, &e))?;
        let found = match doc.get("schema") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        if found != SCHEMA {
            let newer = found
                .strip_prefix(SCHEMA_PREFIX)
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|v| v > 1);
            let file = file.to_string();
            return Err(if newer {
                ReportError::NewerSchema { file, found }
            } else {
                ReportError::WrongSchema { file, found }
            });
        }
        serde_json::from_str(text).map_err(|e| json_error(file, &e))
    }

    /// Reads and parses a report file.
    pub fn load(path: &Path) -> Result<Report, ReportError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ReportError::Read {
            file: file.clone(),
            error,
        })?;
        Report::from_json(&text, &file)
    }
}

impl Totals {
    /// Sums the nodes' paths.
    pub fn from_nodes(nodes: &[NodeReport]) -> Totals {
        let mut t = Totals {
            nodes: nodes.len() as u64,
            ..Totals::default()
        };
        for path in nodes.iter().flat_map(|n| n.paths.iter().map(|(_, p)| p)) {
            t.paths_up += u64::from(path.state == PathState::Up);
            t.paths_down += u64::from(path.state == PathState::Down);
            t.open_streams += path.open_streams;
            t.bytes_sent += path.bytes_sent;
            t.bytes_received += path.bytes_received;
            t.dials_ok += path.dials.ok;
            t.dials_failed += path.dials.failed.values().sum::<u64>();
        }
        t
    }
}

impl Paths {
    /// The paths present, as (`"ssh"` | `"konnectivity"`, report).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &PathReport)> {
        std::iter::once(("ssh", &self.ssh))
            .chain(self.konnectivity.as_ref().map(|k| ("konnectivity", k)))
    }
}

/// Formats a time as RFC 3339 UTC with seconds precision (`...Z`), the
/// format of `generated_at` and `since`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn json_error(file: &str, e: &serde_json::Error) -> ReportError {
    // serde_json appends " at line L column C"; the location goes in front.
    let full = e.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    ReportError::Json {
        file: file.to_string(),
        line: e.line(),
        column: e.column(),
        message,
    }
}
