//! The migration under load, as an operator runs it through the admin API
//! (and `sshbridge migrate status` for its exit code): full apply, nodes
//! that are not ready, automatic rollback during soak, rollback of
//! everything, kill -9 of the daemon mid-rollout, a corrupt state file.

use std::time::Duration;

use sshbridge::report::{PathState, Report};
use sshbridge_config::Route;
use sshbridge_migrate::{NodePhase, RunPhase, Status};
use sshbridge_tests::{phase_of, sshbridge_cli, Bridge, Cluster, Load, LoadCounts};

use crate::support::{konnectivity_setup, kubelet_via_connect, within};

/// Bound on a whole rollout of a few nodes with the kit's short timings.
const ROLLOUT: Duration = Duration::from_secs(60);

fn all_in(s: &Status, nodes: &[&str], phase: NodePhase) -> bool {
    nodes.iter().all(|n| phase_of(s, n) == phase)
}

fn route(r: &Report, node: &str) -> Route {
    r.nodes
        .iter()
        .find(|n| n.name == node)
        .map_or(Route::Ssh, |n| n.route)
}

/// Lets the load run a little longer, stops it, and expects no failure.
async fn no_failures(load: Load) -> anyhow::Result<LoadCounts> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = load.stop().await?;
    assert_eq!(
        counts.failed, 0,
        "requests failed during the migration: {:#?}",
        counts.failures
    );
    Ok(counts)
}

fn names(cluster: &Cluster) -> Vec<String> {
    cluster.nodes.iter().map(|n| n.name.clone()).collect()
}

#[tokio::test]
async fn a_full_apply_under_load_moves_every_node_with_zero_failed_requests() -> anyhow::Result<()>
{
    within(180, async {
        let s = konnectivity_setup(5, &[], &[0, 1, 2, 3, 4], |_| {}).await?;
        let (cluster, bridge) = (&s.cluster, &s.bridge);
        let nodes = names(cluster);
        let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
        let plan = bridge
            .migration_plan(r#"{"batch_size":{"count":2}}"#)
            .await?;
        assert!(plan.not_ready.is_empty(), "{:?}", plan.not_ready);
        assert_eq!(plan.batches.len(), 3, "5 nodes by 2: {:?}", plan.batches);
        let load = Load::start(bridge, cluster)?;
        bridge
            .migration_post("apply", r#"{"batch_size":{"count":2}}"#)
            .await?;
        let status = bridge
            .wait_for_migration("every node done", ROLLOUT, |s| {
                s.phase == RunPhase::Finished && all_in(s, &nodes, NodePhase::Done)
            })
            .await?;
        assert!(!status.regressed(), "{:?}", status.rolled_back);
        let before = load.counts();
        // Traffic after the rollout goes over konnectivity, still error-free.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let counts = no_failures(load).await?;
        let report = bridge.report().await?;
        for n in &nodes {
            assert_eq!(route(&report, n), Route::Konnectivity, "{n}");
            assert!(
                counts.ok.get(*n) > before.ok.get(*n),
                "{n} served no request after its cutover: {counts:?}"
            );
            let k = sshbridge_tests::dials_ok(&report, n).1;
            assert!(k > 0, "{n}: no dial went over konnectivity");
        }
        let finalized = bridge.migration_post("finalize", "{}").await?;
        let finalized: sshbridge_migrate::FinalState = serde_json::from_str(&finalized)
            .map_err(|e| anyhow::anyhow!("finalize answered {finalized}: {e}"))?;
        assert_eq!(finalized.nodes, nodes, "finalize must list every node");
        assert!(!finalized.finalized_at.is_empty(), "{finalized:?}");
        let status = bridge.migration_status().await?;
        assert_eq!(
            status.finalized_at.as_deref(),
            Some(finalized.finalized_at.as_str()),
            "/migration must record the finalize it answered"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_node_without_an_agent_stays_on_ssh_and_plan_says_why() -> anyhow::Result<()> {
    within(150, async {
        let s = konnectivity_setup(3, &[], &[0, 1], |_| {}).await?;
        let bridge = &s.bridge;
        let plan = bridge.migration_plan("{}").await?;
        let why = plan
            .not_ready
            .iter()
            .find(|e| e.node == "node-2")
            .map(|e| e.reason.clone())
            .ok_or_else(|| anyhow::anyhow!("plan does not list node-2 as not ready: {plan:?}"))?;
        assert!(why.to_lowercase().contains("agent"), "{why}");
        assert!(!plan.nodes().any(|n| n == "node-2"), "{plan:?}");
        let load = Load::start(bridge, &s.cluster)?;
        bridge
            .migration_post("apply", r#"{"batch_size":{"count":3}}"#)
            .await?;
        let status = bridge
            .wait_for_migration("node-0 and node-1 done", ROLLOUT, |s| {
                all_in(s, &["node-0", "node-1"], NodePhase::Done)
            })
            .await?;
        assert_eq!(phase_of(&status, "node-2"), NodePhase::Ssh, "{status:?}");
        // node-2 is not done: finalize is refused, naming it and its phase.
        let (code, why) = bridge.migration_answer("finalize", "{}").await?;
        assert_eq!(code, 409, "finalize with node-2 on ssh: {why}");
        assert!(
            why.contains("node-2 (ssh)") && !why.contains("node-0"),
            "the refusal must name the node that is not done: {why}"
        );
        assert!(bridge.migration_status().await?.finalized_at.is_none());
        no_failures(load).await?;
        let report = bridge.report().await?;
        assert_eq!(route(&report, "node-2"), Route::Ssh);
        assert_eq!(route(&report, "node-0"), Route::Konnectivity);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_agent_killed_during_soak_rolls_its_node_back_with_a_reason() -> anyhow::Result<()> {
    within(150, async {
        let mut s = konnectivity_setup(2, &[], &[0, 1], |_| {}).await?;
        let load = Load::start(&s.bridge, &s.cluster)?;
        s.bridge
            .migration_post("apply", r#"{"nodes":["node-0"],"soak":"60s"}"#)
            .await?;
        s.bridge
            .wait_for_migration("node-0 in soak", ROLLOUT, |st| {
                phase_of(st, "node-0") == NodePhase::Soak
            })
            .await?;
        s.agents[0].as_mut().unwrap().kill().await?;
        let status = s
            .bridge
            .wait_for_migration("node-0 rolled back", Duration::from_secs(20), |st| {
                phase_of(st, "node-0") == NodePhase::RolledBack
            })
            .await?;
        assert!(status.regressed());
        let node = status.nodes.iter().find(|n| n.name == "node-0").unwrap();
        let reason = node.rollback_reason.clone().unwrap_or_default();
        // The reason is the soak's verdict on the konnectivity path, with
        // the error the dead agent left behind.
        assert!(
            reason.starts_with("konnectivity ")
                && reason.contains("failed during soak")
                && reason.contains("last error:"),
            "a rollback must say why: {node:?}"
        );
        assert!(
            status
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("node-0")),
            "the paused rollout must say which node stopped it: {}",
            sshbridge_tests::status_summary(&status)
        );
        assert_eq!(route(&s.bridge.report().await?, "node-0"), Route::Ssh);

        // Traffic keeps flowing: after the rollback nothing fails.
        let at_rollback = load.counts();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let counts = load.stop().await?;
        assert_eq!(
            counts.failed, at_rollback.failed,
            "requests failed after the rollback: {:#?}",
            counts.failures
        );
        assert!(counts.ok.get("node-0") > at_rollback.ok.get("node-0"));
        assert!(
            counts.failures.iter().all(|f| f.starts_with("node-0")),
            "only node-0 may have lost requests: {:#?}",
            counts.failures
        );
        let cli = sshbridge_cli(["migrate", "status", "--admin", &s.bridge.admin_arg()]).await?;
        assert_eq!(cli.code, Some(3), "{cli:?}");
        assert!(cli.stdout.contains("node-0"), "{cli:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn rollback_all_returns_every_node_to_ssh_under_load() -> anyhow::Result<()> {
    within(150, async {
        let s = konnectivity_setup(3, &[], &[0, 1, 2], |_| {}).await?;
        let bridge = &s.bridge;
        let nodes = ["node-0", "node-1", "node-2"];
        let load = Load::start(bridge, &s.cluster)?;
        bridge
            .migration_post("apply", r#"{"batch_size":{"count":3},"soak":"30s"}"#)
            .await?;
        bridge
            .wait_for_migration("every node in soak", ROLLOUT, |st| {
                all_in(st, &nodes, NodePhase::Soak)
            })
            .await?;
        let report = bridge.report().await?;
        assert!(nodes
            .iter()
            .all(|n| route(&report, n) == Route::Konnectivity));
        bridge.migration_post("rollback", r#"{"all":true}"#).await?;
        let status = bridge
            .wait_for_migration("every node rolled back", Duration::from_secs(15), |st| {
                all_in(st, &nodes, NodePhase::RolledBack)
            })
            .await?;
        assert!(status.regressed());
        let report = bridge.report().await?;
        for n in nodes {
            assert_eq!(route(&report, n), Route::Ssh, "{n}");
        }
        no_failures(load).await?;
        Ok(())
    })
    .await
}

/// Every node's phase as the state file records it. The file must exist
/// and parse; a node it does not list was never touched (`ssh`).
fn recorded_phases(bridge: &Bridge, nodes: &[&str]) -> anyhow::Result<Vec<NodePhase>> {
    let path = bridge.config.dir.join("migration.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("the state file {}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    anyhow::ensure!(v["nodes"].is_object(), "no nodes in {text}");
    nodes
        .iter()
        .map(|n| match v["nodes"].get(*n) {
            None => Ok(NodePhase::Ssh),
            Some(node) => serde_json::from_value(node["phase"].clone())
                .map_err(|e| anyhow::anyhow!("phase of {n} in {text}: {e}")),
        })
        .collect()
}

/// Where a phase is on the way to `done`; a rollback is off the way.
fn progress(phase: NodePhase) -> anyhow::Result<u8> {
    Ok(match phase {
        NodePhase::Ssh => 0,
        NodePhase::Shadow => 1,
        NodePhase::Cutover => 2,
        NodePhase::Soak => 3,
        NodePhase::Done => 4,
        NodePhase::RolledBack => anyhow::bail!("a node rolled back"),
    })
}

#[tokio::test]
async fn a_daemon_killed_mid_rollout_resumes_consistently() -> anyhow::Result<()> {
    within(240, async {
        let s = konnectivity_setup(2, &[], &[0, 1], |k| k.migration.shadow_probes = 3).await?;
        let cluster = s.cluster;
        let mut bridge = s.bridge;
        let _agents = s.agents;
        let nodes = ["node-0", "node-1"];
        for target in [NodePhase::Shadow, NodePhase::Soak, NodePhase::Done] {
            let plan = bridge
                .migration_post("apply", r#"{"batch_size":{"count":1},"soak":"4s"}"#)
                .await?;
            let plan: sshbridge_migrate::Plan = serde_json::from_str(&plan)?;
            assert_eq!(
                plan.nodes().count(),
                2,
                "both nodes must be ready: {plan:?}"
            );
            let what = format!("node-0 in {target}");
            let shown = bridge
                .wait_for_migration(&what, ROLLOUT, |st| phase_of(st, "node-0") == target)
                .await?;
            bridge.kill().await;
            let recorded = recorded_phases(&bridge, &nodes)?;
            // Every step is recorded before it takes effect: the file is at
            // least as far as what /migration showed before the kill.
            for (n, phase) in nodes.iter().zip(&recorded) {
                let before = phase_of(&shown, n);
                assert!(
                    progress(*phase)? >= progress(before)?,
                    "kill -9 in {target}: /migration showed {n} in {before}, the file has {phase}"
                );
            }
            let (config, k) = (bridge.config.clone(), bridge.konnectivity.clone());
            drop(bridge);
            bridge = Bridge::start_with(config, k, None).await?;
            bridge
                .wait_for_admin("/migration", 200, Duration::from_secs(20))
                .await?;
            // The restarted daemon resumes from the file: no node is behind
            // what was recorded (a daemon that lost its state shows ssh).
            let resumed = bridge.migration_status().await?;
            for (n, phase) in nodes.iter().zip(&recorded) {
                let after = phase_of(&resumed, n);
                assert!(
                    progress(after)? >= progress(*phase)?,
                    "after kill -9 in {target}: {n} was recorded {phase}, resumed in {after}"
                );
            }
            let report = bridge.report().await?;
            for (n, phase) in nodes.iter().zip(&recorded) {
                assert_eq!(
                    route(&report, n),
                    phase.route(),
                    "after kill -9 in {target}: {n} was recorded {phase}"
                );
            }
            bridge
                .wait_for_migration("the resumed rollout done", ROLLOUT, |st| {
                    st.phase == RunPhase::Finished && all_in(st, &nodes, NodePhase::Done)
                })
                .await?;
            for (i, _) in nodes.iter().enumerate() {
                kubelet_via_connect(&bridge, &cluster, i).await?;
            }
            // Start the next round from scratch.
            bridge.kill().await;
            std::fs::remove_file(bridge.config.dir.join("migration.json"))?;
            let (config, k) = (bridge.config.clone(), bridge.konnectivity.clone());
            drop(bridge);
            bridge = Bridge::start_with(config, k, None).await?;
            bridge
                .wait_for_report("every ssh path up", Duration::from_secs(30), |r| {
                    r.nodes.iter().all(|n| n.paths.ssh.state == PathState::Up)
                })
                .await?;
            for n in nodes {
                bridge
                    .wait_for_konnectivity(n, Duration::from_secs(30))
                    .await?;
            }
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_corrupt_state_file_is_refused_and_kept() -> anyhow::Result<()> {
    within(90, async {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let config = cluster.bridge_config()?;
        let state = config.dir.join("migration.json");
        let garbage = b"{\"schema\": 1, \"nodes\": {\"node-0\": {\"phase\": \"sho";
        std::fs::write(&state, garbage)?;
        let bridge = Bridge::start(config, Some(&cluster.nodes[0].kubelet_target())).await?;
        kubelet_via_connect(&bridge, &cluster, 0).await?;
        let answer = bridge
            .wait_for_admin("/migration", 503, Duration::from_secs(10))
            .await?;
        assert!(
            answer.body.contains(&state.display().to_string()),
            "the 503 must name the state file: {}",
            answer.body
        );
        let (code, why) = bridge.migration_answer("apply", "{}").await?;
        assert_eq!(code, 503, "apply on a corrupt store: {why}");
        assert!(
            why.contains(&state.display().to_string()),
            "the refused apply must name the state file: {why}"
        );
        assert_eq!(
            std::fs::read(&state)?,
            garbage,
            "the state file was changed"
        );
        kubelet_via_connect(&bridge, &cluster, 0).await?;
        Ok(())
    })
    .await
}
