//! A node going away: fast 503s while it is gone, the tunnel back by
//! itself, and 504 when a node stops answering.

use std::time::{Duration, Instant};

use sshbridge_tests::{Bridge, Cluster};

use crate::support::{cluster_and_bridge, within};

#[tokio::test]
async fn killed_sshd_gives_fast_503_and_the_tunnel_comes_back_by_itself() -> anyhow::Result<()> {
    within(90, async {
        let (mut cluster, mut bridge) = cluster_and_bridge(2).await?;
        let target = cluster.nodes[1].kubelet_target();
        bridge
            .wait_for_status(&target, 200, Duration::from_secs(20))
            .await?;
        cluster.nodes[1].sshd.kill();
        // keepalive 1s x 3: the bridge must notice within a few seconds.
        bridge
            .wait_for_status(&target, 503, Duration::from_secs(10))
            .await?;
        let started = Instant::now();
        let c = bridge.egress().connect(&target).await?;
        assert_eq!(c.status, 503, "{c:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a dial to a node that is down must fail fast, took {:?}",
            started.elapsed()
        );
        // The reason names the node and the sshd it cannot reach.
        let sshd = cluster.nodes[1].sshd.addr().to_string();
        for want in [
            cluster.nodes[1].name.as_str(),
            "path ssh is unavailable",
            &sshd,
        ] {
            assert!(c.body.contains(want), "the 503 must say {want:?}: {c:?}");
        }
        // The other node is unaffected.
        let c = bridge
            .egress()
            .connect(&cluster.nodes[0].kubelet_target())
            .await?;
        assert_eq!(c.status, 200);
        cluster.nodes[1].sshd.restart().await?;
        bridge
            .wait_for_status(&target, 200, Duration::from_secs(20))
            .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_node_that_stops_answering_gives_504_after_the_dial_timeout() -> anyhow::Result<()> {
    within(90, async {
        let cluster = Cluster::builder().nodes(2).build().await?;
        let mut config = cluster.bridge_config()?;
        config.dial_timeout = "1s".into();
        // Keepalives slower than the dial timeout, so the tunnel still
        // counts as up when the dial is attempted.
        config.keepalive_interval = "10s".into();
        let frozen = &cluster.nodes[1];
        let bridge = Bridge::start(config, Some(&frozen.kubelet_target())).await?;
        frozen.sshd.freeze();
        let started = Instant::now();
        let c = bridge
            .egress()
            .connect(&frozen.echo.addr().to_string())
            .await?;
        let took = started.elapsed();
        frozen.sshd.thaw();
        assert_eq!(c.status, 504, "{c:?}");
        // The reason names the node, the target and the timeout that expired.
        let want = format!(
            "dial of {} through node {} timed out after 1s",
            frozen.echo.addr(),
            frozen.name
        );
        assert!(c.body.contains(&want), "the 504 must say {want:?}: {c:?}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "504 should come after the 1s dial timeout, came after {took:?}"
        );
        let c = bridge
            .egress()
            .connect(&cluster.nodes[0].kubelet_target())
            .await?;
        assert_eq!(c.status, 200, "the other node must keep working");
        Ok(())
    })
    .await
}
