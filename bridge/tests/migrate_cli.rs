//! `sshbridge migrate ...` against a fake admin API on a unix socket that
//! serves the `/migration` contract with documents made from the migrate
//! crate's own types.

#[path = "migrate_cli/kit.rs"]
mod kit;

use sshbridge_migrate::{ApplyOptions, FinalState, NodePhase, RunPhase};

use kit::{json, node, rollout_ending_in, sshbridge, status, text, FakeAdmin};

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
