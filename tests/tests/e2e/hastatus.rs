//! Health across bridges (`[ha] status`), against a real kube-apiserver
//! v1.20.2 (scripts/k8s-harness): two `sshbridge run` processes publish
//! their status objects, each one's report shows the other's view, and a
//! killed bridge turns gone after 3 intervals.

use std::time::{Duration, Instant};

use sshbridge::report::Report;
use sshbridge_tests::inventory::api_only;
use sshbridge_tests::{Bridge, BridgeConfig, Cluster};

use crate::support::within;

/// `[ha] status_interval` of the test: gone after 3 s.
const INTERVAL_S: u64 = 1;

fn with_status(mut c: BridgeConfig, id: &str, kubeconfig: &std::path::Path) -> BridgeConfig {
    c.extra_bridge_lines = vec![
        format!("id = {id:?}"),
        "[kubernetes]".into(),
        format!("kubeconfig = {:?}", kubeconfig.display().to_string()),
        "[ha]".into(),
        "status = \"kubernetes:default\"".into(),
        format!("status_interval = \"{INTERVAL_S}s\""),
    ];
    c
}

async fn wait_report(
    bridge: &Bridge,
    within: Duration,
    ok: impl Fn(&Report) -> bool,
) -> anyhow::Result<Report> {
    let start = Instant::now();
    loop {
        let r = bridge.report().await?;
        if ok(&r) {
            return Ok(r);
        }
        anyhow::ensure!(
            start.elapsed() < within,
            "report never matched within {within:?}: {}",
            r.to_json()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `r`'s bridges part shows `peer` live and its view of `node`
/// with the SSH path up.
fn sees(r: &Report, peer: &str, node: &str) -> bool {
    let Some(b) = &r.bridges else { return false };
    let live = b.bridges.iter().any(|s| s.id == peer && s.gone.is_none());
    let view = b.nodes.iter().any(|n| {
        n.name == node
            && n.bridges
                .iter()
                .any(|v| v.bridge == peer && !v.gone && v.ssh.as_deref() == Some("up"))
    });
    live && view
}

#[tokio::test]
async fn two_bridges_see_each_other_and_a_killed_one_turns_gone() -> anyhow::Result<()> {
    within(240, async {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let cp = api_only(
            &cluster.pki,
            &cluster.ca_path,
            &cluster.dir.path().join("cp"),
        )
        .await?;
        let node = &cluster.nodes[0];
        let target = node.echo.addr().to_string();
        let one = with_status(cluster.bridge_config()?, "cp-1", cp.kubeconfig());
        let mut two = with_status(cluster.bridge_config()?, "cp-2", cp.kubeconfig());
        two.dir = cluster.dir.path().join("bridge-2");
        std::fs::create_dir_all(&two.dir)?;
        two.uds = two.dir.join("egress.sock");
        let one = Bridge::start(one, Some(&target)).await?;
        let mut two = Bridge::start(two, Some(&target)).await?;

        // Each one's report shows the other's view of the node.
        let settle = Duration::from_secs(20);
        let r1 = wait_report(&one, settle, |r| sees(r, "cp-2", &node.name)).await?;
        wait_report(&two, settle, |r| sees(r, "cp-1", &node.name)).await?;
        let b = r1.bridges.as_ref().expect("bridges part");
        anyhow::ensure!(b.namespace == "default" && b.publish.writes >= 1, "{b:?}");
        anyhow::ensure!(b.publish.last_error.is_none(), "{b:?}");
        let n = &b.nodes[0];
        anyhow::ensure!(n.live_bridges == 2 && n.agents_reach == 0, "{n:?}");

        // The objects are in the API, one per bridge, labelled.
        let (ok, out, err) = cp
            .kubectl(&[
                "get",
                "configmap",
                "-n",
                "default",
                "-l",
                "sshbridge.io/bridge-status=true",
                "-o",
                "name",
            ])
            .await?;
        anyhow::ensure!(ok, "kubectl: {err}");
        let mut names: Vec<&str> = out.lines().collect();
        names.sort();
        anyhow::ensure!(
            names
                == [
                    "configmap/sshbridge-status-cp-1",
                    "configmap/sshbridge-status-cp-2"
                ],
            "{out}"
        );
        let out = sshbridge_tests::sshbridge_cli(["report", "--admin", &one.admin_arg()]).await?;
        anyhow::ensure!(
            out.stdout
                .contains("bridges (default, every 1s): cp-1 (this), cp-2")
                && out.stdout.contains("agents reach 0 of 2 live bridges"),
            "sshbridge report:\n{}{}",
            out.stdout,
            out.stderr
        );

        // Killed: gone for the other after 3 intervals, not before.
        let before = one.report().await?;
        two.kill().await;
        let killed = Instant::now();
        let r = wait_report(&one, Duration::from_secs(15), |r| {
            r.bridges
                .as_ref()
                .is_some_and(|b| b.bridges.iter().any(|s| s.id == "cp-2" && s.gone.is_some()))
        })
        .await?;
        let took = killed.elapsed();
        eprintln!("cp-2 killed -> gone on cp-1 after {took:?}");
        anyhow::ensure!(
            took >= Duration::from_secs(3 * INTERVAL_S - 1),
            "gone after only {took:?}"
        );
        let b = r.bridges.as_ref().expect("bridges part");
        let n = &b.nodes[0];
        anyhow::ensure!(n.live_bridges == 1, "{n:?}");
        anyhow::ensure!(
            n.bridges.iter().any(|v| v.bridge == "cp-2" && v.gone),
            "{n:?}"
        );
        // Write rate and object size of a 1-node bridge at a 1 s interval.
        let (b0, b1) = (
            before.bridges.expect("part"),
            r.bridges.clone().expect("part"),
        );
        let secs = (r.bridge.uptime_seconds.max(1)) as f64;
        eprintln!(
            "cp-1: {} writes in {secs}s ({:.0}/min), object data {} bytes (was {})",
            b1.publish.writes,
            b1.publish.writes as f64 * 60.0 / secs,
            b1.publish.last_bytes,
            b0.publish.last_bytes
        );
        let shown = sshbridge_tests::sshbridge_cli(["report", "--admin", &one.admin_arg()]).await?;
        anyhow::ensure!(
            shown.stdout.contains("cp-2 GONE (no status for"),
            "{}",
            shown.stdout
        );
        Ok(())
    })
    .await
}
