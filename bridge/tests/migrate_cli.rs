//! `sshbridge migrate ...` against a fake admin API on a unix socket that
//! serves the `/migration` contract with documents made from the migrate
//! crate's own types.

use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sshbridge_config::Route;
use sshbridge_migrate::plan::plan_nodes;
use sshbridge_migrate::state::Transition;
use sshbridge_migrate::{
    ApplyOptions, BatchSpec, FinalState, MigrationState, NodePhase, NodeStatus, NodeView, Plan,
    RunPhase, Settings, Status,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

/// One request the fake daemon received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: String,
}

type Handler = dyn Fn(&Seen, usize) -> (u16, String) + Send + Sync;

/// A fake admin API: `handler(request, n)` answers, `n` counting earlier
/// requests to the same path.
struct FakeAdmin {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeAdmin {
    fn start(handler: impl Fn(&Seen, usize) -> (u16, String) + Send + Sync + 'static) -> Self {
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

    fn addr(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    fn requests(&self, path: &str) -> Vec<Seen> {
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

async fn sshbridge(args: &[&str]) -> Output {
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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn node(name: &str, phase: NodePhase, reason: &str) -> NodeStatus {
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

fn status(phase: RunPhase, nodes: Vec<NodeStatus>) -> Status {
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

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

/// A daemon whose rollout runs one poll, then ends with `last`.
fn rollout_ending_in(last: Status) -> FakeAdmin {
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

#[tokio::test]
async fn status_json_passes_the_document_through() {
    let doc = status(
        RunPhase::Running,
        vec![node("node-a", NodePhase::Soak, "shadow passed")],
    );
    let served = json(&doc);
    let fake = FakeAdmin::start(move |_, _| (200, served.clone()));
    let out = sshbridge(&["migrate", "status", "--admin", &fake.addr(), "-o", "json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, serde_json::to_value(&doc).unwrap());
    assert_eq!(fake.requests("/migration")[0].method, "GET");
}

#[tokio::test]
async fn apply_follows_the_rollout_in_plain_lines_and_exits_0() {
    let done = status(
        RunPhase::Finished,
        vec![
            node("node-a", NodePhase::Done, "soak passed"),
            node("node-b", NodePhase::Done, "soak passed"),
        ],
    );
    let fake = rollout_ending_in(done);
    let out = sshbridge(&[
        "migrate",
        "apply",
        "--admin",
        &fake.addr(),
        "--batch-size",
        "50%",
        "--soak",
        "30s",
        "--nodes",
        "node-a,node-b",
    ])
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let body: serde_json::Value =
        serde_json::from_str(&fake.requests("/migration/apply")[0].body).unwrap();
    assert_eq!(body["batch_size"], serde_json::json!({ "percent": 50.0 }));
    assert_eq!(body["soak"], "30s");
    assert_eq!(body["nodes"], serde_json::json!(["node-a", "node-b"]));
    for want in [
        "batch 1: node-a, node-b",
        "rollout running, batch 1 of 1",
        "node-a: ssh -> soak (route konnectivity)",
        "node-a: soak -> done (route konnectivity): soak passed",
        "node-b: shadow -> done",
        "Rollout finished: 2 node(s) done, 0 rolled back",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    assert!(
        !stdout.contains('\x1b'),
        "no redraw when not a terminal:\n{stdout}"
    );
    assert_eq!(fake.requests("/migration").len(), 2);
}

#[tokio::test]
async fn apply_exits_3_when_a_node_rolled_back() {
    let mut aborted = status(
        RunPhase::Aborted,
        vec![
            node("node-a", NodePhase::Done, "soak passed"),
            node(
                "node-b",
                NodePhase::RolledBack,
                "konnectivity dial failures 2/10 during soak",
            ),
        ],
    );
    aborted.reason = Some("node-b breached during soak".into());
    let fake = rollout_ending_in(aborted);
    let out = sshbridge(&["migrate", "apply", "--admin", &fake.addr()]).await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout
            .contains("node-b: shadow -> rolled_back (route ssh): konnectivity dial failures 2/10"),
        "{stdout}"
    );
    assert!(stdout.contains("1 rolled back (node-b)"), "{stdout}");
    let body: ApplyOptions =
        serde_json::from_str(&fake.requests("/migration/apply")[0].body).unwrap();
    assert_eq!(body, ApplyOptions::default(), "no flags, no overrides");
}

#[tokio::test]
async fn rollback_posts_all_or_the_named_nodes() {
    let fake = FakeAdmin::start(|req, _| {
        let all = req.body.contains("all");
        let names = if all {
            r#"["node-a","node-b"]"#
        } else {
            r#"["node-b"]"#
        };
        (200, format!(r#"{{"rolled_back":{names}}}"#))
    });
    let out = sshbridge(&["migrate", "rollback", "--all", "--admin", &fake.addr()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("node-a, node-b"),
        "{}",
        text(&out.stdout)
    );
    let out = sshbridge(&["migrate", "rollback", "node-b", "--admin", &fake.addr()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bodies: Vec<serde_json::Value> = fake
        .requests("/migration/rollback")
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(bodies[0], serde_json::json!({ "all": true }));
    assert_eq!(bodies[1], serde_json::json!({ "nodes": ["node-b"] }));
    let out = sshbridge(&["migrate", "rollback", "--admin", &fake.addr()]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "rollback needs NODE... or --all"
    );
}

#[tokio::test]
async fn unreachable_daemon_exits_1_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix:{}", dir.path().join("missing.sock").display());
    let out = sshbridge(&["migrate", "status", "--admin", &addr]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&addr) && err.contains("is `sshbridge run` running?"),
        "{err}"
    );
}

#[tokio::test]
async fn finalize_shows_a_409_and_writes_the_egress_selector_when_done() {
    let not_done = FakeAdmin::start(|_, _| {
        (
            409,
            r#"{"error":"finalize needs every node done; not yet: node-b (soak)"}"#.into(),
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("egress.yaml");
    let file_arg = file.display().to_string();
    let args = |addr: &str| {
        vec![
            "migrate".to_string(),
            "finalize".into(),
            "--admin".into(),
            addr.to_string(),
            "--uds".into(),
            "/run/sshbridge/konnectivity.sock".into(),
            "--write-egress-selector".into(),
            file_arg.clone(),
        ]
    };
    let a = args(&not_done.addr());
    let out = sshbridge(&a.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("409") && err.contains("not yet: node-b (soak)"),
        "{err}"
    );
    assert!(!file.exists(), "nothing written when finalize was refused");

    let state = FinalState {
        nodes: vec!["node-a".into(), "node-b".into()],
        finalized_at: "2025-01-01T00:10:00Z".into(),
    };
    let done = FakeAdmin::start(move |_, _| (200, json(&state)));
    let a = args(&done.addr());
    let out = sshbridge(&a.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("2 node(s) serve over konnectivity"));
    let yaml = std::fs::read_to_string(&file).unwrap();
    assert!(yaml.contains("kind: EgressSelectorConfiguration"), "{yaml}");
    assert!(yaml.contains("proxyProtocol: GRPC"), "{yaml}");
    assert!(
        yaml.contains("udsName: \"/run/sshbridge/konnectivity.sock\""),
        "{yaml}"
    );
    assert_eq!(done.requests("/migration/finalize")[0].method, "POST");
}
