//! Runs the built `sshbridge` binary: `report` against a local admin socket
//! and `report diff` on fixture files, checking exit codes and output.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reports")
        .join(name)
}

async fn sshbridge(args: &[&str]) -> Output {
    let run = Command::new(env!("CARGO_BIN_EXE_sshbridge"))
        .args(args)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    timeout(LIMIT, run)
        .await
        .expect("sshbridge finished in time")
        .expect("sshbridge ran")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn diff(before: &str, after: &str, extra: &[&str]) -> Output {
    let (b, a) = (fixture(before), fixture(after));
    let mut args = vec!["report", "diff", b.to_str().unwrap(), a.to_str().unwrap()];
    args.extend_from_slice(extra);
    sshbridge(&args).await
}

#[tokio::test]
async fn healthy_reports_diff_clean() {
    let out = diff("healthy-before.json", "healthy-after.json", &[]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout
            .trim_end()
            .ends_with("OK: no regressions (no changes)"),
        "{stdout}"
    );
}

#[tokio::test]
async fn node_going_down_exits_3_and_names_it() {
    let out = diff("healthy-after.json", "node-b-down.json", &[]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    let verdict = stdout.lines().last().unwrap();
    assert!(
        verdict.starts_with("REGRESSION: 1 of 3 nodes got worse (node-b: ssh up -> down"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("node-a") && !stdout.contains("node-c"),
        "only changes are shown:\n{stdout}"
    );

    // The way back is an improvement.
    let out = diff("node-b-down.json", "healthy-after.json", &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[tokio::test]
async fn diff_as_json_lists_changes() {
    let out = diff("healthy-after.json", "node-b-down.json", &["-o", "json"]).await;
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["regressed_nodes"], serde_json::json!(["node-b"]));
    let first = &v["changes"][0];
    assert_eq!(
        (first["node"].as_str(), first["what"].as_str()),
        (Some("node-b"), Some("state"))
    );
    assert_eq!(first["is_regression"], true);
}

#[tokio::test]
async fn thresholds_come_from_flags() {
    // node-c's reconnects went 2 -> 3 between the healthy fixtures.
    let out = diff(
        "healthy-before.json",
        "healthy-after.json",
        &["--reconnects", "0"],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("node-c: ssh reconnects 2 -> 3"));

    let out = diff(
        "healthy-before.json",
        "healthy-after.json",
        &["--p99-factor", "0.5"],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a factor under 1 is a usage error"
    );
}

#[tokio::test]
async fn malformed_file_exits_1_naming_it() {
    let out = diff("healthy-before.json", "malformed.json", &[]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("malformed.json:4:3"), "{stderr}");

    let out = diff("healthy-before.json", "does-not-exist.json", &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does-not-exist.json"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn report_without_a_daemon_names_the_address() {
    let out = sshbridge(&["report", "--admin", "unix:/nonexistent/admin.sock"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unix:/nonexistent/admin.sock"), "{stderr}");
    assert!(stderr.contains("is `sshbridge run` running?"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

/// Serves `body` as the answer to one request on a unix socket.
async fn admin_server(body: String) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await.unwrap() {
                0 => return,
                n => head.extend_from_slice(&buf[..n]),
            }
        }
        assert!(head.starts_with(b"GET /report HTTP/1.1\r\n"));
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(answer.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
    });
    (dir, format!("unix:{}", path.display()))
}

#[tokio::test]
async fn report_fetches_from_the_admin_socket() {
    let body = std::fs::read_to_string(fixture("node-b-down.json")).unwrap();
    let (_dir, addr) = admin_server(body.clone()).await;
    let out = sshbridge(&["report", "--admin", &addr, "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        body,
        "JSON output keeps the documented key order"
    );

    let (_dir, addr) = admin_server(body).await;
    let out = sshbridge(&["report", "--admin", &addr]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let row = stdout
        .lines()
        .find(|l| l.starts_with("node-b"))
        .expect("a node-b row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..5],
        ["node-b", "ssh", "ssh", "down", "2m20s"],
        "{stdout}"
    );
    assert!(row.contains("ssh to node-b (10.0.0.6:22)"), "{row}");
    assert!(stdout.contains("3 nodes, 2 paths up, 1 down"), "{stdout}");
}
