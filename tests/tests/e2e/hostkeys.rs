//! Host keys are always verified: a wrong or unknown key refuses that node
//! only; hashed and `@cert-authority` known_hosts work.

use std::time::Duration;

use sshbridge_tests::{hostkeys, metric, Bridge, Cluster, KnownHostsStyle, Node};

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
        let file = kh.display().to_string();
        let mut config = cluster.bridge_config()?;
        config.known_hosts = kh;
        let bridge = Bridge::start(config, Some(&good.kubelet_target())).await?;
        // Each refusal says which of the two it is, names the node, its
        // sshd and the file, and says what to do; never the other reason.
        let says = |body: &str, node: &Node, reason: &str, not: &str, fix: &str| {
            let sshd = node.sshd.addr().to_string();
            for want in [reason, node.name.as_str(), &sshd, &file, fix] {
                assert!(
                    body.contains(want),
                    "{}'s 503 must say {want:?}: {body}",
                    node.name
                );
            }
            assert!(!body.contains(not), "{}: {body}", node.name);
        };
        // Give the refused nodes a few reconnect rounds (backoff max 500ms):
        // they must stay refused, never silently accepted.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            let c = bridge.egress().connect(&wrong.kubelet_target()).await?;
            assert_eq!(
                c.status, 503,
                "{} has a changed host key: {c:?}",
                wrong.name
            );
            says(
                &c.body,
                wrong,
                "does not match",
                "is unknown",
                "replace those lines",
            );
            let c = bridge.egress().connect(&unknown.kubelet_target()).await?;
            assert_eq!(
                c.status, 503,
                "{} has an unknown host key: {c:?}",
                unknown.name
            );
            says(
                &c.body,
                unknown,
                "is unknown",
                "does not match",
                "ssh-keyscan",
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let c = bridge.egress().connect(&good.kubelet_target()).await?;
        assert_eq!(c.status, 200, "the node with a good key must keep working");
        // The metrics count every refusal as a host key failure, and
        // nothing else: no auth, timeout, refused or other attempt.
        let metrics = bridge.metrics().await?;
        let failures = |node: &str, reason: &str| {
            let labels = [("node", node), ("reason", reason)];
            metric(&metrics, "sshbridge_handshake_failures_total", &labels)
                .unwrap_or_else(|| panic!("no handshake failure series for {labels:?}"))
        };
        for node in [wrong, unknown] {
            let host_key = failures(&node.name, "host_key");
            assert!(
                host_key >= 2.0,
                "{} was refused several times, counted {host_key} host_key failures",
                node.name
            );
        }
        for node in [good, wrong, unknown] {
            for reason in ["auth", "timeout", "refused", "other"] {
                assert_eq!(
                    failures(&node.name, reason),
                    0.0,
                    "{} failed for reason {reason}",
                    node.name
                );
            }
        }
        assert_eq!(failures(&good.name, "host_key"), 0.0);
        // Only the node whose sshd presents another key than known_hosts
        // lists counts as a mismatch; an unknown key is not one.
        let mismatches = |node: &Node| {
            let labels = [("node", node.name.as_str())];
            metric(&metrics, "sshbridge_host_key_mismatches_total", &labels)
                .unwrap_or_else(|| panic!("no host key mismatch series for {labels:?}"))
        };
        let wrong_count = mismatches(wrong);
        assert!(
            wrong_count >= 2.0 && wrong_count <= failures(&wrong.name, "host_key"),
            "{} presented a mismatching key on every attempt, counted {wrong_count}",
            wrong.name
        );
        assert_eq!(mismatches(unknown), 0.0, "an unknown key is not a mismatch");
        assert_eq!(mismatches(good), 0.0);
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
