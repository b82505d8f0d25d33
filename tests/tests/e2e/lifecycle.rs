//! Reloads, shutdown and the mTLS TCP frontend.

use std::time::Duration;

use sshbridge_tests::{kubelet_get, Bridge, Cluster, Egress};
use tokio::io::AsyncWriteExt;

use crate::support::{echo_round_trip, read_to_end, ssh_sessions, within};

#[tokio::test]
async fn sighup_adds_and_removes_nodes_and_keeps_open_streams() -> anyhow::Result<()> {
    within(120, async {
        let cluster = Cluster::builder().nodes(3).build().await?;
        let (kept, removed, added) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
        let mut config = cluster.bridge_config()?;
        config.nodes = vec![kept.entry(), removed.entry()];
        let mut bridge = Bridge::start(config.clone(), Some(&kept.kubelet_target())).await?;
        bridge
            .wait_for_status(&removed.kubelet_target(), 200, Duration::from_secs(20))
            .await?;
        let c = bridge.egress().connect(&added.kubelet_target()).await?;
        assert_eq!(
            c.status, 403,
            "a node not in the config must be refused: {c:?}"
        );

        let mut open = bridge
            .egress()
            .connect(&kept.echo.addr().to_string())
            .await?;
        assert_eq!(open.status, 200);
        echo_round_trip(&mut open.stream, b"before reload").await?;

        // The reload also asks for two SSH sessions per node: the kept
        // node keeps its one session, the added node starts with two.
        config.nodes = vec![kept.entry(), added.entry()];
        config.extra_ssh_lines.push("sessions_per_node = 2".into());
        bridge.rewrite_config(config)?;
        bridge.sighup()?;
        bridge
            .wait_for_status(&added.kubelet_target(), 200, Duration::from_secs(20))
            .await?;
        let two = async {
            while ssh_sessions(added.sshd.addr())?.len() != 2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<_, anyhow::Error>(())
        };
        tokio::time::timeout(Duration::from_secs(20), two)
            .await
            .map_err(|_| anyhow::anyhow!("the added node never got its 2 sessions"))??;
        assert_eq!(
            ssh_sessions(kept.sshd.addr())?.len(),
            1,
            "the kept node's session was replaced by the reload"
        );
        assert!(
            bridge.log().contains("ssh.sessions_per_node changed"),
            "the reload did not say that connected nodes keep their sessions:\n{}",
            bridge.log_tail(20)
        );
        let c = bridge.egress().connect(&added.kubelet_target()).await?;
        let (_, body) =
            kubelet_get(c.stream, cluster.kubelet_client_tls()?, added.address, "/x").await?;
        assert_eq!(body, format!("node={} path=/x\n", added.name));
        // The reload swapped the routing table with the node set: the
        // added node answering means the removed one is no longer routed.
        let c = bridge.egress().connect(&removed.kubelet_target()).await?;
        assert_eq!(
            c.status, 403,
            "{} was removed from the config: {c:?}",
            removed.name
        );
        assert!(
            c.body.contains("is not allowed") && c.body.contains(&removed.kubelet_target()),
            "the 403 must say the destination is not allowed: {c:?}"
        );
        let report = bridge.report().await?;
        let listed: Vec<&str> = report.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            listed,
            [kept.name.as_str(), added.name.as_str()],
            "/report after the reload"
        );
        echo_round_trip(&mut open.stream, b"after reload").await?;
        assert!(bridge.is_running());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_invalid_config_on_sighup_is_rejected_and_the_old_one_keeps_serving(
) -> anyhow::Result<()> {
    within(90, async {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let node = &cluster.nodes[0];
        let config = cluster.bridge_config()?;
        let mut bridge = Bridge::start(config.clone(), Some(&node.kubelet_target())).await?;
        let mut open = bridge
            .egress()
            .connect(&node.echo.addr().to_string())
            .await?;
        assert_eq!(open.status, 200);

        let mut bad = config;
        bad.extra_bridge_lines.push("bogus_key = 1".into());
        bad.nodes.clear();
        bridge.rewrite_config(bad)?;
        bridge.sighup()?;
        // The operator's only feedback is the log: it must name the problem.
        bridge
            .wait_for_log("bogus_key", Duration::from_secs(10))
            .await?;
        assert!(bridge.is_running(), "a bad reload must not stop the bridge");
        let c = bridge.egress().connect(&node.kubelet_target()).await?;
        assert_eq!(c.status, 200, "the old config must keep serving: {c:?}");
        echo_round_trip(&mut open.stream, b"still served").await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn sigterm_drains_an_open_stream_then_exits_zero() -> anyhow::Result<()> {
    within(90, async {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let node = &cluster.nodes[0];
        let mut bridge =
            Bridge::start(cluster.bridge_config()?, Some(&node.kubelet_target())).await?;
        let mut open = bridge
            .egress()
            .connect(&node.echo.addr().to_string())
            .await?;
        assert_eq!(open.status, 200);
        echo_round_trip(&mut open.stream, b"before").await?;
        bridge.sigterm()?;
        // The stream in flight keeps working while the bridge drains.
        echo_round_trip(&mut open.stream, b"during drain").await?;
        assert!(
            bridge.is_running(),
            "the bridge exited with a stream still open"
        );
        open.stream.shutdown().await?;
        assert!(read_to_end(&mut open.stream, 10).await?.is_empty());
        let status = bridge.wait_exit(Duration::from_secs(30)).await?;
        assert!(
            status.success(),
            "exit after drain: {status}\n{}",
            bridge.log_tail(40)
        );
        // Every tracked task (listeners, servers, probers) ended before exit.
        let log = bridge.log();
        assert!(
            log.contains("every task stopped: 0 tasks left") && !log.contains("tasks left running"),
            "tasks were left running at exit:\n{}",
            bridge.log_tail(40)
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn mtls_tcp_egress_rejects_a_client_without_a_certificate() -> anyhow::Result<()> {
    within(90, async {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let node = &cluster.nodes[0];
        let config = cluster.with_tcp_egress(cluster.bridge_config()?)?;
        let bridge = Bridge::start(config, Some(&node.kubelet_target())).await?;
        let with_cert = bridge.egress_tcp().expect("configured");
        let c = with_cert.connect(&node.kubelet_target()).await?;
        assert_eq!(c.status, 200, "{c:?}");
        let (_, body) =
            kubelet_get(c.stream, cluster.kubelet_client_tls()?, node.address, "/").await?;
        assert_eq!(body, format!("node={} path=/\n", node.name));

        let Some(Egress::Tls { addr, .. }) = bridge.egress_tcp() else {
            unreachable!()
        };
        let without = Egress::Tls {
            addr,
            config: cluster.pki.client_config(None)?,
        };
        // The bridge, not the client, ends the handshake, and says why:
        // TLS 1.3 lets the client finish first, so the alert arrives on
        // the client's first read.
        let refused = without.connect(&node.kubelet_target()).await;
        let err = match refused {
            Ok(c) => panic!("a client without a certificate got an answer: {c:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("CertificateRequired"),
            "refused for another reason than the missing certificate: {err}"
        );
        Ok(())
    })
    .await
}
