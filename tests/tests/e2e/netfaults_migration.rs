//! A partition during the migration, in network namespaces: a node cut
//! off (both paths, no reset) while it soaks on Konnectivity. As
//! docs/migration.md says, a breach during soak rolls the node back at
//! once and pauses the rollout; the other node soaks on. After the heal
//! the state store, `/migration` and the routes in `/report` agree.
//! (Partitions during shadow and during a rollback are not covered yet.)

use std::time::Duration;

use sshbridge::report::{PathState, Report};
use sshbridge_config::Route;
use sshbridge_migrate::NodePhase;
use sshbridge_tests::netlab::traffic::Traffic;
use sshbridge_tests::netlab::Lab;
use sshbridge_tests::{phase_of, ssh_state, Bridge, Cluster};
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

#[tokio::test]
async fn netns_partition_during_soak_rolls_the_node_back_and_the_store_agrees() -> anyhow::Result<()>
{
    within(120, async {
        let mut lab = Lab::new()?;
        let cluster = Cluster::in_netns(&mut lab, 2).await?;
        let (ns0, ns1) = (lab.namespaces()[0].clone(), lab.namespaces()[1].clone());
        let config = cluster.bridge_config()?;
        let k = cluster.netns_konnectivity_config(&config, &ns0)?;
        let _a0 = cluster
            .start_netns_agent(&k, &cluster.nodes[0], &ns0)
            .await?;
        let _a1 = cluster
            .start_netns_agent(&k, &cluster.nodes[1], &ns1)
            .await?;
        let bridge = Bridge::start_with(config, Some(k), None).await?;
        bridge
            .wait_for_report("every ssh path up", Duration::from_secs(30), all_up)
            .await?;
        for node in ["node-0", "node-1"] {
            bridge
                .wait_for_konnectivity(node, Duration::from_secs(30))
                .await?;
        }
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
        let status = bridge
            .wait_for_migration("node-1 rolled back", Duration::from_secs(20), |s| {
                phase_of(s, "node-1") == NodePhase::RolledBack
            })
            .await?;
        let rolled_back_after = cut.elapsed();
        let node = status
            .nodes
            .iter()
            .find(|n| n.name == "node-1")
            .expect("node-1 in the status");
        let reason = node.rollback_reason.clone().unwrap_or_default();
        assert!(
            reason.starts_with("konnectivity ") && reason.contains("failed during soak"),
            "the rollback must give the soak's verdict: {node:?}"
        );
        assert!(
            status
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("node-1")),
            "the paused rollout must name node-1: {}",
            sshbridge_tests::status_summary(&status)
        );
        assert_eq!(
            phase_of(&status, "node-0"),
            NodePhase::Soak,
            "node-0 soaks on"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let healed = Instant::now();
        ns1.heal()?;
        bridge
            .wait_for_report("node-1's ssh path up again", Duration::from_secs(20), |r| {
                ssh_state(r, "node-1") == Some(PathState::Up)
            })
            .await?;
        let back = healed.elapsed();
        // Store, /migration and routes agree after the heal.
        let status = bridge.migration_status().await?;
        let report = bridge.report().await?;
        for (name, phase, want) in [
            ("node-1", NodePhase::RolledBack, Route::Ssh),
            ("node-0", NodePhase::Soak, Route::Konnectivity),
        ] {
            let live = phase_of(&status, name);
            let stored = stored_phase(&bridge, name)?;
            // node-0 may have finished its soak meanwhile: done is on the
            // same path.
            let ok =
                |p: NodePhase| p == phase || (phase == NodePhase::Soak && p == NodePhase::Done);
            assert!(ok(live), "{name}: /migration shows {live:?}");
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
        traffic.stop();
        assert_others_clean(&traffic, "node-1", start);
        eprintln!(
            "netfaults: partition during soak: rolled back {rolled_back_after:?} after the cut; \
             ssh back {back:?} after the heal"
        );
        Ok(())
    })
    .await
}
