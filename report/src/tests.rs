use super::*;
use crate::fixtures::{healthy_path, report};

#[test]
fn new_sorts_nodes_and_sums_totals() {
    let mut r = report(&["node-c", "node-a", "node-b"]);
    let names: Vec<&str> = r.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node-a", "node-b", "node-c"]);
    assert_eq!(r.generated_at, "2024-05-01T09:00:00Z");
    assert_eq!(r.totals.paths_up, 3);
    assert_eq!(r.totals.bytes_received, 15_000);

    r.nodes[0].paths.ssh.state = PathState::Down;
    r.nodes[0]
        .paths
        .ssh
        .dials
        .failed
        .insert("timeout".into(), 4);
    r.nodes[0].paths.konnectivity = Some(healthy_path());
    let t = Totals::from_nodes(&r.nodes);
    assert_eq!((t.nodes, t.paths_up, t.paths_down), (3, 3, 1));
    assert_eq!((t.dials_ok, t.dials_failed), (40, 4));
    assert_eq!(t.open_streams, 8);
}

#[test]
fn serializes_with_stable_documented_key_order() {
    let mut r = report(&["node-a"]);
    let p = &mut r.nodes[0].paths.ssh;
    p.dials.failed.insert("timeout".into(), 2);
    p.dials.failed.insert("refused".into(), 1);
    p.last_error = Some("connect timed out".into());
    let expected = r#"{
  "schema": "sshbridge.report/v1",
  "generated_at": "2024-05-01T09:00:00Z",
  "bridge": {
    "id": "cp-1",
    "version": "0.1.0",
    "uptime_seconds": 3600
  },
  "totals": {
    "nodes": 1,
    "paths_up": 1,
    "paths_down": 0,
    "open_streams": 2,
    "bytes_sent": 1000,
    "bytes_received": 5000,
    "dials_ok": 10,
    "dials_failed": 0
  },
  "nodes": [
    {
      "name": "node-a",
      "address": "10.0.0.5",
      "route": "ssh",
      "paths": {
        "ssh": {
          "state": "up",
          "since": "2024-05-01T09:00:00Z",
          "last_error": "connect timed out",
          "probe": {
            "p50_ms": 4.0,
            "p99_ms": 9.0,
            "window": 20,
            "failures_in_window": 0,
            "failure_ratio": 0.0
          },
          "consecutive_failures": 0,
          "reconnects": 1,
          "open_streams": 2,
          "bytes_sent": 1000,
          "bytes_received": 5000,
          "dials": {
            "ok": 10,
            "failed": {
              "refused": 1,
              "timeout": 2
            }
          }
        },
        "konnectivity": null
      }
    }
  ]
}
"#;
    assert_eq!(r.to_json(), expected);
    assert_eq!(Report::from_json(expected, "x.json").unwrap(), r);
}

#[test]
fn malformed_json_names_file_line_and_column() {
    let text = "{\n  \"schema\": \"sshbridge.report/v1\",\n  \"nodes\": [,]\n}\n";
    let err = Report::from_json(text, "before.json").unwrap_err();
    match &err {
        ReportError::Json { line, column, .. } => assert_eq!((*line, *column), (3, 13)),
        other => panic!("expected a JSON error, got {other:?}"),
    }
    assert!(err.to_string().starts_with("before.json:3:13: "), "{err}");
    assert!(!err.to_string().contains("at line"), "{err}");
}

#[test]
fn missing_field_is_named() {
    let mut v: serde_json::Value = serde_json::from_str(&report(&["node-a"]).to_json()).unwrap();
    v["nodes"][0]["paths"]["ssh"]
        .as_object_mut()
        .unwrap()
        .remove("reconnects");
    let text = serde_json::to_string_pretty(&v).unwrap();
    let err = Report::from_json(&text, "after.json")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("after.json:"), "{err}");
    assert!(err.contains("missing field `reconnects`"), "{err}");
}

#[test]
fn newer_schema_says_so() {
    let text = r#"{"schema": "sshbridge.report/v2", "whatever": {"new": 1}}"#;
    let err = Report::from_json(text, "new.json").unwrap_err();
    assert!(matches!(err, ReportError::NewerSchema { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("new.json: "), "{msg}");
    assert!(msg.contains("written by a newer sshbridge"), "{msg}");
}

#[test]
fn other_documents_are_not_reports() {
    for text in [
        r#"{"kind": "Pod"}"#,
        r#"{"schema": "sshbridge.report/v0"}"#,
        r#"{"schema": 1}"#,
    ] {
        let err = Report::from_json(text, "pod.json").unwrap_err();
        assert!(
            matches!(err, ReportError::WrongSchema { .. }),
            "{text}: {err:?}"
        );
        assert!(err.to_string().contains("not an sshbridge report"), "{err}");
    }
    let err = Report::from_json("[1, 2]", "list.json").unwrap_err();
    assert!(matches!(err, ReportError::WrongSchema { .. }), "{err:?}");
}

#[test]
fn unreadable_file_is_named() {
    let err = Report::load(Path::new("/nonexistent/before.json")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/before.json"),
        "{err}"
    );
}

#[test]
fn unknown_extra_keys_are_accepted_within_v1() {
    let mut v: serde_json::Value = serde_json::from_str(&report(&["node-a"]).to_json()).unwrap();
    v["nodes"][0]["zone"] = "eu-1".into();
    let r = Report::from_json(&v.to_string(), "x.json").unwrap();
    assert_eq!(r.nodes[0].name, "node-a");
}

#[test]
fn the_konnectivity_flow_control_mode_is_in_json_and_table() {
    let mut r = report(&["node-a", "node-b"]);
    r.nodes[0].paths.konnectivity = Some(PathReport {
        flow_control: Some("credit".into()),
        agents: Some(2),
        ..healthy_path()
    });
    let json = r.to_json();
    assert_eq!(
        json.matches("\"flow_control\": \"credit\"").count(),
        1,
        "{json}"
    );
    assert_eq!(json.matches("\"agents\": 2").count(), 1, "{json}");
    let back = Report::from_json(&json, "r.json").unwrap();
    assert_eq!(back, r);
    let table = render::report_table(&r, false);
    assert!(
        table.contains("konnectivity flow control: node-a credit (2 agents)"),
        "{table}"
    );
}

#[test]
fn the_ssh_certificate_is_in_json_and_named_in_the_table_with_its_warning() {
    let mut r = report(&["node-a"]);
    r.ssh_certificate = Some(CertificateReport {
        path: "/etc/sshbridge/id_ed25519-cert.pub".into(),
        key_id: "bridge-cp-1".into(),
        serial: 7,
        principals: vec!["sshbridge".into()],
        valid_before: "2026-12-08T00:00:00Z".into(),
        seconds_left: 3 * 86_400 + 3600,
        expiring: true,
    });
    let back = Report::from_json(&r.to_json(), "test").expect("round trip");
    assert_eq!(back.ssh_certificate, r.ssh_certificate);
    let table = render::report_table(&r, false);
    assert!(
        table.contains(
            "ssh certificate \"bridge-cp-1\" (serial 7, principals sshbridge) expires \
             2026-12-08T00:00:00Z (in 3d1h): EXPIRING"
        ),
        "{table}"
    );
    r.ssh_certificate.as_mut().unwrap().seconds_left = 0;
    assert!(render::report_table(&r, false).contains("EXPIRED at 2026-12-08T00:00:00Z"));
    let mut old = serde_json::from_str::<serde_json::Value>(&r.to_json()).unwrap();
    old.as_object_mut().unwrap().remove("ssh_certificate");
    let parsed = Report::from_json(&old.to_string(), "old").expect("a report without it parses");
    assert_eq!(parsed.ssh_certificate, None);
}
