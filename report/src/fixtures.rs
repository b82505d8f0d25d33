//! Sample reports for tests (this crate's and, with the `fixtures`
//! feature, other crates'): healthy nodes of a bridge `cp-1`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::*;

/// A healthy path: up for an hour, 4 ms p50, 9 ms p99, no failures.
pub fn healthy_path() -> PathReport {
    PathReport {
        state: PathState::Up,
        since: Some("2024-05-01T09:00:00Z".into()),
        last_error: None,
        probe: ProbeStats {
            p50_ms: Some(4.0),
            p99_ms: Some(9.0),
            window: 20,
            failures_in_window: 0,
            failure_ratio: 0.0,
        },
        consecutive_failures: 0,
        reconnects: 1,
        open_streams: 2,
        bytes_sent: 1000,
        bytes_received: 5000,
        dials: DialStats {
            ok: 10,
            failed: BTreeMap::new(),
        },
        flow_control: None,
        agents: None,
    }
}

/// A node of this name at 10.0.0.5, routed over a [`healthy_path`].
pub fn node(name: &str) -> NodeReport {
    NodeReport {
        name: name.into(),
        address: "10.0.0.5".into(),
        route: Route::Ssh,
        paths: Paths {
            ssh: healthy_path(),
            konnectivity: None,
        },
    }
}

/// Bridge `cp-1`, up an hour, with healthy ssh-routed nodes of these names.
pub fn report(names: &[&str]) -> Report {
    let bridge = BridgeInfo {
        id: "cp-1".into(),
        version: "0.1.0".into(),
        uptime_seconds: 3600,
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_554_000);
    Report::new(bridge, names.iter().map(|n| node(n)).collect(), at)
}
