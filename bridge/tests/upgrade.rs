//! Upgrades: `sshbridge report diff` compares a report written by 0.1.0
//! with one written by a newer minor (same schema, extra keys this version
//! does not know), in either order; a report of a newer schema is refused
//! with a message naming it. Fixtures: tests/fixtures/upgrade. The rules
//! are in docs/upgrade.md.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::timeout;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/upgrade")
        .join(name)
        .display()
        .to_string()
}

async fn diff(before: &str, after: &str) -> Output {
    let run = Command::new(env!("CARGO_BIN_EXE_sshbridge"))
        .args(["report", "diff", before, after])
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    timeout(Duration::from_secs(30), run)
        .await
        .expect("sshbridge finished in time")
        .expect("sshbridge ran")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn reports_of_0_1_0_and_a_newer_minor_compare_both_ways() {
    let (old, new) = (fixture("report-0.1.0.json"), fixture("report-0.2.0.json"));
    let up = diff(&old, &new).await;
    assert_eq!(up.status.code(), Some(0), "{}", text(&up));
    let down = diff(&new, &old).await;
    assert_eq!(down.status.code(), Some(0), "{}", text(&down));

    let worse = diff(&old, &fixture("report-0.2.0-node-b-down.json")).await;
    assert_eq!(worse.status.code(), Some(3), "{}", text(&worse));
    assert!(
        text(&worse).contains("node-b: ssh up -> down"),
        "{}",
        text(&worse)
    );
}

#[tokio::test]
async fn a_report_of_a_newer_schema_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let newer = dir.path().join("report-v2.json");
    let old = std::fs::read_to_string(fixture("report-0.2.0.json")).unwrap();
    std::fs::write(
        &newer,
        old.replace("sshbridge.report/v1", "sshbridge.report/v2"),
    )
    .unwrap();
    let out = diff(&fixture("report-0.1.0.json"), newer.to_str().unwrap()).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("written by a newer sshbridge"),
        "{}",
        text(&out)
    );
}
