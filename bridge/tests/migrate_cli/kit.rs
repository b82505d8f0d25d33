//! The test kit of `migrate_cli.rs`: a fake admin API on a unix socket
//! serving the `/migration` contract, and documents made from the migrate
//! crate's own types.

use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sshbridge_config::Route;
use sshbridge_migrate::plan::plan_nodes;
use sshbridge_migrate::state::Transition;
use sshbridge_migrate::{
    BatchSpec, MigrationState, NodePhase, NodeStatus, NodeView, Plan, RunPhase, Settings, Status,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

/// One request the fake daemon received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: String,
}

type Handler = dyn Fn(&Seen, usize) -> (u16, String) + Send + Sync;

/// A fake admin API: `handler(request, n)` answers, `n` counting earlier
/// requests to the same path.
pub struct FakeAdmin {
    pub _dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeAdmin {
    pub fn start(handler: impl Fn(&Seen, usize) -> (u16, String) + Send + Sync + 'static) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (log, handler) = (log.clone(), handler.clone());
                tokio::spawn(async move {
                    let Ok(Some(req)) = timeout(LIMIT, read_request(&mut s)).await else {
                        return;
                    };
                    let n = {
                        let mut log = log.lock().unwrap();
                        let n = log.iter().filter(|r| r.path == req.path).count();
                        log.push(req.clone());
                        n
                    };
                    let (status, body) = handler(&req, n);
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = timeout(LIMIT, s.write_all(resp.as_bytes())).await;
                });
            }
        });
        FakeAdmin {
            _dir: dir,
            socket,
            seen,
        }
    }

    pub fn addr(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    pub fn requests(&self, path: &str) -> Vec<Seen> {
        let log = self.seen.lock().unwrap();
        log.iter().filter(|r| r.path == path).cloned().collect()
    }
}

async fn read_request(s: &mut tokio::net::UnixStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next()?.to_string(), words.next()?.to_string());
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + 4 + length {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + length]).to_string();
    Some(Seen { method, path, body })
}

pub async fn sshbridge(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sshbridge"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    timeout(LIMIT, child)
        .await
        .expect("sshbridge did not exit in time")
        .expect("sshbridge runs")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

pub fn node(name: &str, phase: NodePhase, reason: &str) -> NodeStatus {
    NodeStatus {
        name: name.into(),
        phase,
        route: phase.route(),
        since: "2025-01-01T00:00:00Z".into(),
        in_phase: "3s".into(),
        waiting_for: (phase == NodePhase::Soak).then(|| "soak: 1m 57s left".to_string()),
        comparison: None,
        rollback_reason: (phase == NodePhase::RolledBack).then(|| reason.to_string()),
        history: vec![Transition {
            from: NodePhase::Ssh,
            to: phase,
            at: "2025-01-01T00:00:00Z".into(),
            reason: reason.into(),
        }],
    }
}

pub fn status(phase: RunPhase, nodes: Vec<NodeStatus>) -> Status {
    Status {
        phase,
        reason: None,
        abort_on_failure: false,
        current_batch: (phase == RunPhase::Running).then_some(1),
        batches: vec![vec!["node-a".into(), "node-b".into()]],
        started_at: Some("2025-01-01T00:00:00Z".into()),
        elapsed: Some("5s".into()),
        waiting_for: vec![],
        rolled_back: nodes
            .iter()
            .filter(|n| n.phase == NodePhase::RolledBack)
            .map(|n| n.name.clone())
            .collect(),
        nodes,
        last_error: None,
        finalized_at: None,
    }
}

fn plan() -> Plan {
    let views: Vec<NodeView> = ["node-a", "node-b"]
        .iter()
        .map(|n| NodeView {
            name: (*n).into(),
            ssh_up: true,
            agents_connected: 1,
            agents_healthy: 1,
            route: Route::Ssh,
        })
        .collect();
    let settings = Settings {
        batch_size: BatchSpec::Count(2),
        shadow_probes: 5,
        max_failure_ratio: 0.0,
        max_latency_ratio: 2.0,
        soak: Duration::from_secs(120),
        probe_interval: Settings::PROBE_INTERVAL,
        probe_timeout: Settings::PROBE_TIMEOUT,
        ready_timeout: Settings::READY_TIMEOUT,
    };
    plan_nodes(&views, &settings, None, &MigrationState::default())
}

pub fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

/// A daemon whose rollout runs one poll, then ends with `last`.
pub fn rollout_ending_in(last: Status) -> FakeAdmin {
    let running = status(
        RunPhase::Running,
        vec![
            node("node-a", NodePhase::Soak, "shadow passed"),
            node("node-b", NodePhase::Shadow, "batch 1"),
        ],
    );
    FakeAdmin::start(
        move |req, n| match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/migration/apply") => (200, json(&plan())),
            ("GET", "/migration") if n == 0 => (200, json(&running)),
            ("GET", "/migration") => (200, json(&last)),
            _ => (404, r#"{"error":"no such endpoint"}"#.into()),
        },
    )
}
