//! Health as an operator sees it: `/report` states per node, `/readyz`,
//! `/metrics` that Prometheus accepts, and the `sshbridge report` CLI with
//! its `diff` verdict.

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use sshbridge::report::{rfc3339, PathState, Report};
use sshbridge_tests::{ssh_last_error, ssh_state, sshbridge_cli, Bridge, Cluster};
use tokio::io::AsyncWriteExt;

use crate::support::{cluster_and_bridge, within};

/// Generous bound for every node to reach `up` after the bridge started.
const ALL_UP: Duration = Duration::from_secs(30);
/// What a 2-core machine running the whole suite may add to a deadline.
const SLACK: Duration = Duration::from_secs(4);

fn all_up(r: &Report) -> bool {
    !r.nodes.is_empty() && r.nodes.iter().all(|n| n.paths.ssh.state == PathState::Up)
}

fn is(state: PathState, node: &'static str) -> impl Fn(&Report) -> bool {
    move |r| ssh_state(r, node) == Some(state)
}

/// How long the kit's config lets a dead node look alive:
/// `keepalive_interval * keepalive_max + [health] interval`.
fn detection_bound(bridge: &Bridge) -> anyhow::Result<Duration> {
    let secs = |s: &str| -> anyhow::Result<u64> {
        s.strip_suffix('s')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("the kit's duration {s:?} is not whole seconds"))
    };
    let c = &bridge.config;
    let keepalive = secs(&c.keepalive_interval)? * u64::from(c.keepalive_max);
    Ok(Duration::from_secs(keepalive + secs(&c.health_interval)?))
}

#[tokio::test]
async fn a_killed_sshd_turns_only_its_node_down_and_back_up() -> anyhow::Result<()> {
    within(120, async {
        let (mut cluster, bridge) = cluster_and_bridge(3).await?;
        let report = bridge
            .wait_for_report("every node up", ALL_UP, all_up)
            .await?;
        assert_eq!(report.schema, "sshbridge.report/v1");
        assert_eq!(report.nodes.len(), 3);
        assert_eq!(report.totals.paths_up, 3, "{:?}", report.totals);
        for n in &report.nodes {
            let p50 = n.paths.ssh.probe.p50_ms;
            assert!(
                p50.is_some_and(|ms| ms > 0.0),
                "{} is up without a probe latency: {p50:?}",
                n.name
            );
        }
        let bound = detection_bound(&bridge)? + SLACK;
        // RFC 3339 in whole seconds, UTC: such stamps sort as text.
        let before_kill = rfc3339(SystemTime::now());
        cluster.nodes[1].sshd.kill();
        let report = bridge
            .wait_for_report("node-1 down", bound, is(PathState::Down, "node-1"))
            .await?;
        // The transition is stamped when the bridge saw it: after the kill,
        // not earlier (a stale state) and not in the future.
        let since = report.nodes[1].paths.ssh.since.clone().unwrap_or_default();
        let seen = rfc3339(SystemTime::now());
        assert!(
            before_kill <= since && since <= seen,
            "node-1 down since {since:?}, killed at {before_kill}, seen at {seen}"
        );
        assert!(
            !ssh_last_error(&report, "node-1").is_empty(),
            "a down node must say why"
        );
        for other in ["node-0", "node-2"] {
            assert_eq!(
                ssh_state(&report, other),
                Some(PathState::Up),
                "{other} must stay up while node-1 is down"
            );
        }
        assert_eq!(report.totals.paths_down, 1, "{:?}", report.totals);
        cluster.nodes[1].sshd.restart().await?;
        let report = bridge
            .wait_for_report("every node up again", Duration::from_secs(20), all_up)
            .await?;
        assert!(
            report.nodes[1].paths.ssh.reconnects >= 1,
            "node-1 came back without a counted reconnect"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_kubelet_certificate_from_another_ca_keeps_its_node_from_up() -> anyhow::Result<()> {
    within(90, async {
        let cluster = Cluster::builder()
            .nodes(2)
            .foreign_kubelet_ca(1)
            .build()
            .await?;
        let config = cluster.bridge_config()?;
        let bridge = Bridge::start(config, Some(&cluster.nodes[0].kubelet_target())).await?;
        let cert_error = |r: &Report| {
            let e = ssh_last_error(r, "node-1").to_lowercase();
            e.contains("certificate") || e.contains("unknownissuer")
        };
        let report = bridge
            .wait_for_report(
                "node-0 up and node-1 failing on its certificate",
                ALL_UP,
                |r| is(PathState::Up, "node-0")(r) && cert_error(r),
            )
            .await?;
        assert_ne!(ssh_state(&report, "node-1"), Some(PathState::Up));
        // More probes change nothing: a kubelet the CA does not vouch for
        // is never counted healthy.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let report = bridge.report().await?;
        assert_ne!(
            ssh_state(&report, "node-1"),
            Some(PathState::Up),
            "node-1's kubelet is not signed by [health].kubelet_ca"
        );
        assert!(cert_error(&report), "{}", ssh_last_error(&report, "node-1"));
        assert!(
            report.nodes[1].paths.ssh.probe.failures_in_window >= 2,
            "{:?}",
            report.nodes[1].paths.ssh.probe
        );
        assert_eq!(ssh_state(&report, "node-0"), Some(PathState::Up));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn readyz_fails_naming_the_nodes_when_every_tunnel_is_down() -> anyhow::Result<()> {
    within(120, async {
        let (mut cluster, bridge) = cluster_and_bridge(2).await?;
        let ready = bridge
            .wait_for_admin("/readyz", 200, Duration::from_secs(20))
            .await?;
        assert!(ready.body.contains("ok"), "{ready:?}");
        let verbose = bridge.admin_get("/healthz?verbose").await?;
        assert_eq!(verbose.status, 200, "{verbose:?}");
        assert!(
            verbose.body.contains("[+]") && !verbose.body.contains("[-]"),
            "/healthz?verbose of a healthy bridge: {}",
            verbose.body
        );
        for node in &mut cluster.nodes {
            node.sshd.kill();
        }
        let bound = detection_bound(&bridge)? + SLACK;
        let failed = bridge.wait_for_admin("/readyz", 503, bound).await?;
        assert!(failed.body.contains("[-]"), "{failed:?}");
        for name in ["node-0", "node-1"] {
            assert!(
                failed.body.contains(name),
                "/readyz must name {name}: {}",
                failed.body
            );
        }
        let live = bridge.admin_get("/livez").await?;
        assert_eq!(
            (live.status, live.body.trim()),
            (200, "ok"),
            "/livez is about the process, not the nodes"
        );
        for node in &mut cluster.nodes {
            node.sshd.restart().await?;
        }
        bridge
            .wait_for_admin("/readyz", 200, Duration::from_secs(20))
            .await?;
        Ok(())
    })
    .await
}

/// `promtool check metrics` on `body`: (exit ok, everything it printed).
async fn promtool(body: &str) -> anyhow::Result<(bool, String)> {
    let mut child = tokio::process::Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!("running /usr/bin/promtool (scripts/test installs it): {e}")
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = body.as_bytes().to_vec();
    tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await??;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), said))
}

fn tunnel_up(node: &str, value: u8) -> String {
    format!("sshbridge_tunnel_up{{node=\"{node}\",path=\"ssh\"}} {value}")
}

#[tokio::test]
async fn metrics_pass_promtool_and_show_each_tunnel() -> anyhow::Result<()> {
    within(120, async {
        let (mut cluster, bridge) = cluster_and_bridge(2).await?;
        bridge
            .wait_for_report("every node up", ALL_UP, all_up)
            .await?;
        let metrics = bridge.wait_for_admin("/metrics", 200, SLACK).await?;
        let (ok, said) = promtool(&metrics.body).await?;
        assert!(ok && said.trim().is_empty(), "promtool: {said}");
        for name in ["node-0", "node-1"] {
            assert!(
                metrics.body.lines().any(|l| l == tunnel_up(name, 1)),
                "no `{}` in /metrics:\n{}",
                tunnel_up(name, 1),
                metrics.body
            );
        }
        cluster.nodes[1].sshd.kill();
        let bound = detection_bound(&bridge)? + SLACK;
        let gone = async {
            loop {
                let m = bridge.admin_get("/metrics").await?;
                if m.body.lines().any(|l| l == tunnel_up("node-1", 0)) {
                    return Ok::<_, anyhow::Error>(m.body);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let body = tokio::time::timeout(bound, gone)
            .await
            .map_err(|_| anyhow::anyhow!("node-1's tunnel never showed 0 in /metrics"))??;
        assert!(body.lines().any(|l| l == tunnel_up("node-0", 1)));
        let (ok, said) = promtool(&body).await?;
        assert!(
            ok && said.trim().is_empty(),
            "promtool with a node down: {said}"
        );
        Ok(())
    })
    .await
}

/// `sshbridge report --admin ... -o json`, saved as `file` in the bridge dir.
async fn save_report(bridge: &Bridge, file: &str) -> anyhow::Result<std::path::PathBuf> {
    let out = sshbridge_cli(["report", "--admin", &bridge.admin_arg(), "-o", "json"]).await?;
    anyhow::ensure!(out.code == Some(0), "sshbridge report -o json: {out:?}");
    Report::from_json(&out.stdout, file)?;
    let path = bridge.config.dir.join(file);
    std::fs::write(&path, &out.stdout)?;
    Ok(path)
}

#[tokio::test]
async fn report_diff_exits_3_naming_a_node_whose_sshd_died() -> anyhow::Result<()> {
    within(120, async {
        let (mut cluster, bridge) = cluster_and_bridge(2).await?;
        bridge
            .wait_for_report("every node up", ALL_UP, all_up)
            .await?;
        let before = save_report(&bridge, "before.json").await?;
        let healthy = save_report(&bridge, "healthy.json").await?;
        let same = sshbridge_cli([
            "report".as_ref(),
            "diff".as_ref(),
            before.as_os_str(),
            healthy.as_os_str(),
        ])
        .await?;
        assert_eq!(same.code, Some(0), "two healthy reports: {same:?}");
        cluster.nodes[1].sshd.kill();
        let bound = detection_bound(&bridge)? + SLACK;
        bridge
            .wait_for_report("node-1 down", bound, is(PathState::Down, "node-1"))
            .await?;
        let after = save_report(&bridge, "after.json").await?;
        let diff = sshbridge_cli([
            "report".as_ref(),
            "diff".as_ref(),
            before.as_os_str(),
            after.as_os_str(),
        ])
        .await?;
        assert_eq!(diff.code, Some(3), "a node went down: {diff:?}");
        assert!(diff.stdout.contains("node-1"), "{}", diff.stdout);
        let json = sshbridge_cli([
            "report".as_ref(),
            "diff".as_ref(),
            before.as_os_str(),
            after.as_os_str(),
            "-o".as_ref(),
            "json".as_ref(),
        ])
        .await?;
        assert_eq!(json.code, Some(3), "{json:?}");
        let doc: serde_json::Value = serde_json::from_str(&json.stdout)?;
        // Probe latencies of the live node may move on a busy machine;
        // the dead one must be listed whatever else is.
        let regressed = doc["regressed_nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(regressed.contains(&"node-1".into()), "{doc}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn report_prints_a_table_row_per_node() -> anyhow::Result<()> {
    within(90, async {
        let (_cluster, bridge) = cluster_and_bridge(3).await?;
        bridge
            .wait_for_report("every node up", ALL_UP, all_up)
            .await?;
        let out = sshbridge_cli(["report", "--admin", &bridge.admin_arg()]).await?;
        assert_eq!(out.code, Some(0), "{out:?}");
        for name in ["node-0", "node-1", "node-2"] {
            // NODE ROUTE PATH STATE ...
            let rows: Vec<Vec<&str>> = out
                .stdout
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .filter(|cells| cells.first() == Some(&name) && cells.get(2) == Some(&"ssh"))
                .collect();
            assert!(
                rows.len() == 1 && rows[0].get(3) == Some(&"up"),
                "want one `{name} ssh ssh up ...` row:\n{}",
                out.stdout
            );
        }
        // A daemon that is not there: exit 1, and the message names where
        // the CLI looked.
        let missing = bridge.config.dir.join("no-such.sock");
        let arg = format!("unix:{}", missing.display());
        let out = sshbridge_cli(["report", "--admin", &arg]).await?;
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains(&arg), "{}", out.stderr);
        Ok(())
    })
    .await
}
