//! A partition during the migration, in network namespaces: a node cut
//! off (both paths, no reset) during its shadow, during its soak and
//! during a rollback. As docs/migration.md says, a failed shadow
//! comparison or a breach during soak rolls the node back and pauses the
//! rollout, and a rollback sends the node back to SSH whatever the
//! network does; the other node goes on. After the heal the state store,
//! `/migration` and the routes in `/report` agree.

use std::time::Duration;

use sshbridge::report::{PathState, Report};
use sshbridge_config::Route;
use sshbridge_migrate::NodePhase;
use sshbridge_tests::netlab::traffic::Traffic;
use sshbridge_tests::netlab::{Lab, NodeNs};
use sshbridge_tests::{phase_of, ssh_state, Agent, Bridge, Cluster, KonnectivityConfig};
use tokio::time::Instant;

use crate::netfaults::{all_up, assert_others_clean, TRAFFIC_PAUSE};
use crate::support::within;

fn route(r: &Report, node: &str) -> Option<Route> {
    r.nodes.iter().find(|n| n.name == node).map(|n| n.route)
}

/// `node`'s phase in the state file (`ssh` when the file does not list it).
fn stored_phase(bridge: &Bridge, node: &str) -> anyhow::Result<NodePhase> {
    let path = bridge.config.dir.join("migration.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("the state file {}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    match v["nodes"].get(node) {
        None => Ok(NodePhase::Ssh),
        Some(n) => Ok(serde_json::from_value(n["phase"].clone())?),
    }
}

/// Two lab nodes with agents in their namespaces, the bridge with
/// Konnectivity (tuned by `tune`), every path up.
async fn setup(
    tune: impl FnOnce(&mut KonnectivityConfig),
) -> anyhow::Result<(Lab, Cluster, Bridge, Vec<Agent>)> {
    let mut lab = Lab::new()?;
    let cluster = Cluster::in_netns(&mut lab, 2).await?;
    let config = cluster.bridge_config()?;
    let mut k = cluster.netns_konnectivity_config(&config, &lab.namespaces()[0])?;
    tune(&mut k);
    let mut agents = Vec::new();
    for (node, ns) in cluster.nodes.iter().zip(lab.namespaces()) {
        agents.push(cluster.start_netns_agent(&k, node, ns).await?);
    }
    let bridge = Bridge::start_with(config, Some(k), None).await?;
    bridge
        .wait_for_report("every ssh path up", Duration::from_secs(30), all_up)
        .await?;
    for node in ["node-0", "node-1"] {
        bridge
            .wait_for_konnectivity(node, Duration::from_secs(30))
            .await?;
    }
    Ok((lab, cluster, bridge, agents))
}

/// node-1 rolled back (reason containing `why`), the rollout paused
/// naming it; after `ns1` heals, its ssh path is up, the store agrees with
/// `/migration` on every node, node-1 routes over ssh and serves a dial.
async fn rolled_back_and_agreed_after_heal(
    bridge: &Bridge,
    cluster: &Cluster,
    ns1: &NodeNs,
    why: &str,
    node0: NodePhase,
) -> anyhow::Result<Duration> {
    let status = bridge
        .wait_for_migration("node-1 rolled back", Duration::from_secs(20), |s| {
            phase_of(s, "node-1") == NodePhase::RolledBack
        })
        .await?;
    let node = status
        .nodes
        .iter()
        .find(|n| n.name == "node-1")
        .expect("node-1 in the status");
    let reason = node.rollback_reason.clone().unwrap_or_default();
    assert!(
        reason.contains(why),
        "node-1's rollback must say {why:?}: {node:?}"
    );
    ns1.heal()?;
    let healed = Instant::now();
    bridge
        .wait_for_report("node-1's ssh path up again", Duration::from_secs(20), |r| {
            ssh_state(r, "node-1") == Some(PathState::Up)
        })
        .await?;
    let back = healed.elapsed();
    let status = bridge.migration_status().await?;
    let report = bridge.report().await?;
    let want0 = if node0 == NodePhase::Ssh || node0 == NodePhase::RolledBack {
        Route::Ssh
    } else {
        Route::Konnectivity
    };
    for (name, phase, want) in [
        ("node-1", NodePhase::RolledBack, Route::Ssh),
        ("node-0", node0, want0),
    ] {
        let live = phase_of(&status, name);
        let stored = stored_phase(bridge, name)?;
        // A node soaking may have finished meanwhile: done is on the same path.
        let ok = |p: NodePhase| p == phase || (phase == NodePhase::Soak && p == NodePhase::Done);
        assert!(
            ok(live),
            "{name}: /migration shows {live:?}, expected {phase:?}"
        );
        assert_eq!(
            stored, live,
            "{name}: the store says {stored:?}, /migration {live:?}"
        );
        assert_eq!(route(&report, name), Some(want), "{name}'s route");
    }
    let c = bridge
        .egress()
        .connect(&cluster.nodes[1].kubelet_target())
        .await?;
    assert_eq!(c.status, 200, "node-1 over ssh after the heal: {c:?}");
    Ok(back)
}

#[tokio::test]
async fn netns_partition_during_shadow_rolls_the_node_back_and_the_store_agrees(
) -> anyhow::Result<()> {
    within(120, async {
        // A long shadow (8 probes a second apart) to cut the node inside it.
        let (lab, cluster, bridge, _agents) = setup(|k| k.migration.shadow_probes = 8).await?;
        let ns1 = lab.namespaces()[1].clone();
        bridge
            .migration_post("apply", r#"{"nodes":["node-1"]}"#)
            .await?;
        bridge
            .wait_for_migration("node-1 in shadow", Duration::from_secs(20), |s| {
                phase_of(s, "node-1") == NodePhase::Shadow
            })
            .await?;
        let cut = Instant::now();
        ns1.blackhole()?;
        let back =
            rolled_back_and_agreed_after_heal(&bridge, &cluster, &ns1, "shadow comparison failed", NodePhase::Ssh)
                .await?;
        eprintln!(
            "netfaults: partition during shadow: rolled back and healed {:?} after the cut; ssh back {back:?} after the heal",
            cut.elapsed()
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn netns_partition_during_rollback_leaves_the_node_on_ssh_and_the_store_agrees(
) -> anyhow::Result<()> {
    within(120, async {
        let (lab, cluster, bridge, _agents) = setup(|_| {}).await?;
        let ns1 = lab.namespaces()[1].clone();
        bridge
            .migration_post("apply", r#"{"batch_size":{"count":2},"soak":"60s"}"#)
            .await?;
        bridge
            .wait_for_migration("both nodes in soak", Duration::from_secs(40), |s| {
                ["node-0", "node-1"]
                    .iter()
                    .all(|n| phase_of(s, n) == NodePhase::Soak)
            })
            .await?;
        // The operator rolls node-1 back while its link is gone: the
        // command lands (the bridge decides routes, not the node).
        ns1.blackhole()?;
        bridge
            .migration_post("rollback", r#"{"nodes":["node-1"]}"#)
            .await?;
        // The partition outlasts the rollback: node-1's ssh path, its route
        // now, goes down before the link comes back.
        bridge
            .wait_for_report("node-1's ssh path down", Duration::from_secs(15), |r| {
                ssh_state(r, "node-1") == Some(PathState::Down)
            })
            .await?;
        let back =
            rolled_back_and_agreed_after_heal(&bridge, &cluster, &ns1, "", NodePhase::Soak).await?;
        eprintln!("netfaults: partition during rollback: ssh back {back:?} after the heal");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn netns_partition_during_soak_rolls_the_node_back_and_the_store_agrees() -> anyhow::Result<()>
{
    within(120, async {
        let (lab, cluster, bridge, _agents) = setup(|_| {}).await?;
        let ns1 = lab.namespaces()[1].clone();
        let traffic = Traffic::start(
            bridge.egress(),
            vec![("node-0".into(), cluster.nodes[0].echo.addr().to_string())],
            TRAFFIC_PAUSE,
        );
        let start = Instant::now();
        bridge
            .migration_post("apply", r#"{"batch_size":{"count":2},"soak":"60s"}"#)
            .await?;
        bridge
            .wait_for_migration("both nodes in soak", Duration::from_secs(40), |s| {
                ["node-0", "node-1"]
                    .iter()
                    .all(|n| phase_of(s, n) == NodePhase::Soak)
            })
            .await?;
        let cut = Instant::now();
        ns1.blackhole()?;
        let back = rolled_back_and_agreed_after_heal(
            &bridge,
            &cluster,
            &ns1,
            "failed during soak",
            NodePhase::Soak,
        )
        .await?;
        let status = bridge.migration_status().await?;
        let reason = status
            .nodes
            .iter()
            .find(|n| n.name == "node-1")
            .and_then(|n| n.rollback_reason.clone())
            .unwrap_or_default();
        assert!(
            reason.starts_with("konnectivity "),
            "the rollback must give the soak's verdict on the konnectivity path: {reason}"
        );
        assert!(
            status
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("node-1")),
            "the paused rollout must name node-1: {}",
            sshbridge_tests::status_summary(&status)
        );
        let rolled_back_after = cut.elapsed();
        traffic.stop();
        assert_others_clean(&traffic, "node-1", start);
        eprintln!(
            "netfaults: partition during soak: rolled back, healed, agreed {rolled_back_after:?} after the cut; \
             ssh back {back:?} after the heal"
        );
        Ok(())
    })
    .await
}
