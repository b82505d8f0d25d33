//! Host keys are always verified: a wrong or unknown key refuses that node
//! only; hashed and `@cert-authority` known_hosts work.

use std::time::Duration;

use sshbridge_tests::{hostkeys, Bridge, Cluster, KnownHostsStyle};

use crate::support::within;

#[tokio::test]
async fn mismatched_and_unknown_host_keys_are_refused_while_other_nodes_work() -> anyhow::Result<()>
{
    within(90, async {
        let cluster = Cluster::builder().nodes(3).build().await?;
        let (good, wrong, unknown) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
        let impostor =
            hostkeys::generate_ed25519(&cluster.dir.path().join("impostor"), "impostor")?;
        let kh = cluster.dir.path().join("known_hosts.mixed");
        hostkeys::write_known_hosts(
            &kh,
            &[
                (good.sshd.addr(), good.sshd.host_key().to_string()),
                (wrong.sshd.addr(), impostor),
            ],
            KnownHostsStyle::Plain,
            None,
        )?;
        let mut config = cluster.bridge_config()?;
        config.known_hosts = kh;
        let bridge = Bridge::start(config, Some(&good.kubelet_target())).await?;
        // Give the refused nodes a few reconnect rounds (backoff max 500ms):
        // they must stay refused, never silently accepted.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            for node in [wrong, unknown] {
                let c = bridge.egress().connect(&node.kubelet_target()).await?;
                assert_eq!(
                    c.status, 503,
                    "{} has a bad host key but CONNECT gave {c:?}",
                    node.name
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let c = bridge.egress().connect(&good.kubelet_target()).await?;
        assert_eq!(c.status, 200, "the node with a good key must keep working");
        let log = bridge.log();
        assert!(
            log.contains(&wrong.name),
            "the log never names the refused node {}",
            wrong.name
        );
        Ok(())
    })
    .await
}

async fn accepted_with(cluster: Cluster, style: KnownHostsStyle) -> anyhow::Result<()> {
    let all: Vec<_> = cluster.nodes.iter().collect();
    let mut config = cluster.bridge_config()?;
    config.known_hosts = cluster.write_known_hosts("known_hosts.variant", &all, style)?;
    let bridge = Bridge::start(config, Some(&cluster.nodes[0].kubelet_target())).await?;
    for node in &cluster.nodes {
        let c = bridge.egress().connect(&node.kubelet_target()).await?;
        assert_eq!(
            c.status, 200,
            "{style:?} known_hosts: {} refused: {c:?}",
            node.name
        );
    }
    Ok(())
}

#[tokio::test]
async fn hashed_known_hosts_are_accepted() -> anyhow::Result<()> {
    within(90, async {
        let cluster = Cluster::builder().nodes(2).build().await?;
        accepted_with(cluster, KnownHostsStyle::Hashed).await
    })
    .await
}

#[tokio::test]
async fn cert_authority_known_hosts_are_accepted() -> anyhow::Result<()> {
    within(90, async {
        let cluster = Cluster::builder().nodes(2).host_ca().build().await?;
        accepted_with(cluster, KnownHostsStyle::CertAuthority).await
    })
    .await
}
