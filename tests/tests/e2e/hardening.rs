//! Inputs and events that used to crash or confuse the daemon (issue 9):
//! a huge soak, a scrape while a tunnel is stopped, two daemons on one
//! store, SIGHUP during start-up, a reload of a migrated node, a host key
//! revoked by a reload. Real daemon binary, real sshd, real agents.

use std::time::Duration;

use sshbridge::admin_client::{post, ClientError};
use sshbridge::report::PathState;
use sshbridge_config::Route;
use sshbridge_migrate::NodePhase;
use sshbridge_tests::hostkeys::host_pattern;
use sshbridge_tests::{phase_of, sshbridge_cli, Bridge, Cluster};

use crate::support::{
    cluster_and_bridge, echo_round_trip, konnectivity_setup, read_to_end, within,
};

fn route(r: &sshbridge::report::Report, node: &str) -> Route {
    r.nodes
        .iter()
        .find(|n| n.name == node)
        .map_or(Route::Ssh, |n| n.route)
}

#[tokio::test]
async fn a_huge_soak_gets_400_naming_the_key_and_the_controller_survives_a_restart(
) -> anyhow::Result<()> {
    within(150, async {
        let s = konnectivity_setup(1, &[], &[0], |_| {}).await?;
        let mut bridge = s.bridge;
        let _agents = s.agents;
        for body in [r#"{"soak":"10000000000000000000s"}"#, r#"{"soak":"8days"}"#] {
            let err = post(
                &bridge.admin_addr(),
                "/migration/apply",
                body,
                Duration::from_secs(10),
            )
            .await
            .expect_err("a soak above 7 days must be refused");
            match err {
                ClientError::Status {
                    status,
                    body: answer,
                    ..
                } => {
                    assert_eq!(status, 400, "{answer}");
                    assert!(
                        answer.contains("soak"),
                        "the 400 must name the key: {answer}"
                    );
                    assert!(
                        answer.contains("7days"),
                        "the 400 must say the maximum: {answer}"
                    );
                }
                other => panic!("{body}: {other}"),
            }
        }
        // Nothing was recorded, and the controller keeps working.
        let status = bridge.migration_status().await?;
        assert_eq!(phase_of(&status, "node-0"), NodePhase::Ssh, "{status:?}");
        let (config, k) = (bridge.config.clone(), bridge.konnectivity.clone());
        bridge.kill().await;
        drop(bridge);
        let bridge = Bridge::start_with(config, k, None).await?;
        bridge
            .wait_for_admin("/migration", 200, Duration::from_secs(20))
            .await?;
        bridge
            .wait_for_konnectivity("node-0", Duration::from_secs(30))
            .await?;
        bridge
            .migration_post("apply", r#"{"soak":"7days"}"#)
            .await?;
        bridge
            .wait_for_migration("node-0 in soak", Duration::from_secs(60), |st| {
                phase_of(st, "node-0") == NodePhase::Soak
            })
            .await?;
        let status = bridge.admin_get("/migration").await?;
        assert_eq!(status.status, 200, "{}", status.body);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn metrics_answer_while_a_tunnel_is_stopped() -> anyhow::Result<()> {
    within(90, async {
        let (cluster, bridge) = cluster_and_bridge(2).await?;
        bridge
            .wait_for_report("both ssh paths up", Duration::from_secs(30), |r| {
                r.nodes.iter().all(|n| n.paths.ssh.state == PathState::Up)
            })
            .await?;
        // An open stream on node-0 holds the drain open; node-1 has none, so
        // its tunnel stops at once while the admin API still answers.
        let mut open = bridge
            .egress()
            .connect(&cluster.nodes[0].echo.addr().to_string())
            .await?;
        assert_eq!(open.status, 200);
        echo_round_trip(&mut open.stream, b"before").await?;
        bridge.sigterm()?;
        let metrics = bridge
            .wait_for_admin("/metrics", 200, Duration::from_secs(20))
            .await?;
        // node-1 stops and node-0 drains, in either order: wait until a
        // scrape shows both (every scrape must answer 200 meanwhile).
        let mut last = metrics.body.clone();
        let poll = async {
            loop {
                let m = bridge.admin_get("/metrics").await?;
                anyhow::ensure!(
                    m.status == 200,
                    "/metrics answered {}: {}",
                    m.status,
                    m.body
                );
                if m.body.contains("sshbridge_tunnels{state=\"stopped\"} 1")
                    && m.body.contains("sshbridge_tunnels{state=\"draining\"} 1")
                {
                    return Ok(());
                }
                last = m.body;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let polled = tokio::time::timeout(Duration::from_secs(20), poll).await;
        polled.map_err(|_| {
            anyhow::anyhow!(
                "no scrape with one stopped and one draining tunnel within 20s; last:\n{last}"
            )
        })??;
        echo_round_trip(&mut open.stream, b"during drain").await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_second_daemon_on_the_same_store_refuses_to_start_naming_the_pid() -> anyhow::Result<()> {
    within(90, async {
        let (cluster, bridge) = cluster_and_bridge(1).await?;
        let first = bridge.pid().expect("running");
        // Same store, its own listeners (so only the store is shared).
        let dir = bridge.config.dir.join("second");
        std::fs::create_dir_all(&dir)?;
        let text = bridge
            .config
            .to_toml()
            .replace(
                &bridge.config.uds.display().to_string(),
                &dir.join("egress.sock").display().to_string(),
            )
            .replace(
                &bridge.config.admin_socket().display().to_string(),
                &dir.join("admin.sock").display().to_string(),
            );
        let store = bridge.config.dir.join("migration.json");
        assert!(text.contains(&store.display().to_string()), "{text}");
        let path = dir.join("sshbridge.toml");
        std::fs::write(&path, text)?;
        let out = sshbridge_cli(["run", "--config", path.to_str().unwrap()]).await?;
        assert_ne!(out.code, Some(0), "{out:?}");
        let said = format!("{}{}", out.stdout, out.stderr);
        assert!(
            said.contains(&format!("pid {first}")),
            "must name the holder: {said}"
        );
        assert!(said.contains("migration.json"), "{said}");
        // The first one is untouched.
        crate::support::kubelet_via_connect(&bridge, &cluster, 0).await?;
        let m = bridge.admin_get("/migration").await?;
        assert_eq!(m.status, 200, "{}", m.body);
        Ok(())
    })
    .await
}

/// Whether `sig` is set in the hex mask of `field` in /proc/PID/status.
fn mask_has(pid: u32, field: &str, sig: i32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|m| m & (1 << (sig - 1)) != 0)
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn sighup_during_startup_does_not_kill_the_daemon() -> anyhow::Result<()> {
    within(90, async {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let node = &cluster.nodes[0];
        let mut bridge = Bridge::start(cluster.bridge_config()?, None).await?;
        let pid = bridge.pid().expect("just started");
        // From the moment the process runs its own code (it blocked the
        // signal, handles it, or started its runtime threads) a SIGHUP
        // must never find the default action, which kills.
        let started = async {
            while !(mask_has(pid, "SigBlk:", libc::SIGHUP)
                || mask_has(pid, "SigCgt:", libc::SIGHUP)
                || threads(pid) > 1)
            {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), started)
            .await
            .map_err(|_| anyhow::anyhow!("the daemon never started"))?;
        for _ in 0..50 {
            if bridge.sighup().is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        bridge
            .wait_for_status(&node.kubelet_target(), 200, Duration::from_secs(30))
            .await?;
        assert!(
            bridge.is_running(),
            "the daemon died:\n{}",
            bridge.log_tail(30)
        );
        bridge
            .wait_for_log("configuration reloaded", Duration::from_secs(10))
            .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_reload_keeps_a_migrated_nodes_route() -> anyhow::Result<()> {
    within(150, async {
        let s = konnectivity_setup(2, &[], &[0, 1], |_| {}).await?;
        let mut bridge = s.bridge;
        let _agents = s.agents;
        bridge
            .migration_post("apply", r#"{"nodes":["node-0"],"soak":"5m"}"#)
            .await?;
        bridge
            .wait_for_migration("node-0 in soak", Duration::from_secs(60), |st| {
                phase_of(st, "node-0") == NodePhase::Soak
            })
            .await?;
        assert_eq!(
            route(&bridge.report().await?, "node-0"),
            Route::Konnectivity
        );
        // Change node-0's settings (its pod CIDRs): its entry is rebuilt.
        let mut config = bridge.config.clone();
        config.nodes[0].pod_cidrs = vec!["10.250.0.0/24".into()];
        bridge.rewrite_config(config)?;
        bridge.sighup()?;
        bridge
            .wait_for_log("configuration reloaded", Duration::from_secs(10))
            .await?;
        let report = bridge.report().await?;
        assert_eq!(
            route(&report, "node-0"),
            Route::Konnectivity,
            "the reload put a migrated node back on its configured route"
        );
        assert_eq!(route(&report, "node-1"), Route::Ssh);
        let st = bridge.migration_status().await?;
        assert_eq!(phase_of(&st, "node-0"), NodePhase::Soak);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_reload_that_revokes_a_host_key_closes_only_that_nodes_session() -> anyhow::Result<()> {
    within(120, async {
        let (cluster, mut bridge) = cluster_and_bridge(2).await?;
        bridge
            .wait_for_report("both ssh paths up", Duration::from_secs(30), |r| {
                r.nodes.iter().all(|n| n.paths.ssh.state == PathState::Up)
            })
            .await?;
        let (revoked, kept) = (&cluster.nodes[0], &cluster.nodes[1]);
        let mut streams = Vec::new();
        for n in [revoked, kept] {
            let mut c = bridge.egress().connect(&n.echo.addr().to_string()).await?;
            assert_eq!(c.status, 200);
            echo_round_trip(&mut c.stream, b"before").await?;
            streams.push(c);
        }
        let known_hosts = bridge.config.known_hosts.clone();
        let mut text = std::fs::read_to_string(&known_hosts)?;
        text.push_str(&format!(
            "@revoked {} {}\n",
            host_pattern(revoked.sshd.addr()),
            revoked.sshd.host_key()
        ));
        std::fs::write(&known_hosts, text)?;
        let config = bridge.config.clone();
        bridge.rewrite_config(config)?;
        bridge.sighup()?;
        // The revoked node's open stream ends; the other keeps echoing.
        let mut kept_stream = streams.pop().expect("two");
        let mut revoked_stream = streams.pop().expect("two");
        read_to_end(&mut revoked_stream.stream, 20).await?;
        echo_round_trip(&mut kept_stream.stream, b"after").await?;
        // It reconnects under the new known_hosts: refused, and says why.
        bridge
            .wait_for_report("node-0's host key refused", Duration::from_secs(20), |r| {
                sshbridge_tests::ssh_last_error(r, &revoked.name).contains("revoked")
            })
            .await?;
        let c = bridge.egress().connect(&revoked.kubelet_target()).await?;
        assert_eq!(c.status, 503, "{c:?}");
        crate::support::kubelet_via_connect(&bridge, &cluster, 1).await?;
        echo_round_trip(&mut kept_stream.stream, b"still").await?;
        Ok(())
    })
    .await
}
