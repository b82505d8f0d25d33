//! Agents proven by service account tokens (`[konnectivity] agent_auth =
//! "tokenreview"`) against a real kube-apiserver: tokens minted by the
//! TokenRequest API, bound to agent pods scheduled to nodes, reviewed by
//! the bridge with TokenReview; real `sshbridge agent` and upstream
//! `proxy-agent` processes presenting them with no client certificate.

use std::time::{Duration, Instant};

use sshbridge_config::Route;
use sshbridge_tests::apiserver::{Binaries, ControlPlane};
use sshbridge_tests::tokenreview::{direct_egress, refused, tokenreview_toml, wait_refused};
use sshbridge_tests::{dials_ok, Bridge, Cluster};

use crate::support::{kubelet_via_connect, within};
use crate::upstream_common::anp;

/// Bound for an agent to be accepted or refused on a busy box.
const SEEN: Duration = Duration::from_secs(30);
/// The agents' namespace and service account (the allow-list).
const NS: &str = "kube-system";
const AGENT_SA: &str = "konnectivity-agent";
/// The audience the bridge reviews tokens for.
const AUD: &str = "sshbridge";

#[tokio::test]
async fn agents_are_proven_by_service_account_tokens_bound_to_their_pods() -> anyhow::Result<()> {
    within(240, async {
        let t0 = Instant::now();
        let bins = Binaries::from_env()?;
        let cluster = Cluster::builder().nodes(2).build().await?;
        let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
        let dir = cluster.dir.path().join("control-plane");
        std::fs::create_dir_all(&dir)?;
        let egress = direct_egress(&dir)?;
        let cp = ControlPlane::start(&bins, &cluster.pki, &cluster.ca_path, &dir, &egress).await?;

        // The agent DaemonSet's pods, one per node, and an intruder's pod
        // on node-0 under a service account outside the allow-list.
        cp.create_service_account(NS, AGENT_SA).await?;
        cp.create_service_account(NS, "intruder").await?;
        let uid0 = cp
            .create_agent_pod(NS, "agent-0", &n0.name, AGENT_SA)
            .await?;
        let uid1 = cp
            .create_agent_pod(NS, "agent-1", &n1.name, AGENT_SA)
            .await?;
        let uidx = cp
            .create_agent_pod(NS, "intruder-0", &n0.name, "intruder")
            .await?;
        let token0 = cp
            .request_token(NS, AGENT_SA, AUD, ("agent-0", &uid0))
            .await?;
        let token1 = cp
            .request_token(NS, AGENT_SA, AUD, ("agent-1", &uid1))
            .await?;
        let other_audience = cp
            .request_token(NS, AGENT_SA, "not-sshbridge", ("agent-0", &uid0))
            .await?;
        let intruder = cp
            .request_token(NS, "intruder", AUD, ("intruder-0", &uidx))
            .await?;
        // Never shown to the bridge before the apiserver stops.
        let unreviewed = cp
            .request_token(NS, AGENT_SA, AUD, ("agent-1", &uid1))
            .await?;

        let config = cluster.bridge_config()?;
        let mut k = cluster.konnectivity_config(&config)?;
        // No client certificates at all: the token is the only credential.
        k.client_ca = None;
        k.route(&n0.name, Route::Konnectivity);
        k.route(&n1.name, Route::Konnectivity);
        k.extra = tokenreview_toml(&cp, &[AUD], &[&format!("{NS}/{AGENT_SA}")]);
        let bridge = Bridge::start_with(config, Some(k.clone()), None).await?;

        // Accepted: node-0's agent, its token bound to a pod on node-0,
        // carries node-0's traffic.
        let ids0 = format!("host={}&ipv4={}", n0.name, n0.address);
        let agent0 = cluster
            .start_token_agent(&k, n0, "agent-node-0", &ids0, &token0)
            .await?;
        bridge.wait_for_konnectivity(&n0.name, SEEN).await?;
        let before = dials_ok(&bridge.report().await?, &n0.name).1;
        for _ in 0..3 {
            kubelet_via_connect(&bridge, &cluster, 0).await?;
        }
        let after = dials_ok(&bridge.report().await?, &n0.name).1;
        assert_eq!(after, before + 3, "3 dials over node-0's agent");
        let accepted = format!(
            "service account {NS}/{AGENT_SA} token, node {} by pod {NS}/agent-0",
            n0.name
        );
        assert!(
            bridge.log().contains(&accepted),
            "the bridge logs whose token it accepted and how it found the node:\n{}",
            bridge.log_tail(20)
        );

        // Refused, each with its reason in the metric and in the agent's
        // own log (the gRPC status it received).
        let wrong_node = format!("agent of node {} claims host={}", n1.name, n0.name);
        let cases = [
            (
                "garbage",
                "not-a-token".to_string(),
                "token_rejected",
                "TokenReview rejected",
            ),
            (
                "intruder",
                intruder.clone(),
                "service_account",
                "system:serviceaccount:kube-system:intruder",
            ),
            (
                "audience",
                other_audience.clone(),
                "token_rejected",
                "TokenReview rejected",
            ),
            ("wrong-node", token1.clone(), "host", wrong_node.as_str()),
        ];
        for (id, token, reason, says) in cases {
            let before = refused(&bridge, reason).await?;
            let mut agent = cluster.start_token_agent(&k, n0, id, &ids0, &token).await?;
            wait_refused(&bridge, &agent, (reason, before), says, SEEN).await?;
            agent.kill().await?;
        }
        let log = bridge.log();
        for token in [&token0, &token1, &other_audience, &intruder] {
            assert!(
                !log.contains(token.as_str()),
                "a token reached the bridge's log"
            );
        }
        assert!(log.contains("Konnectivity agent refused"));

        // Upstream's proxy-agent with --service-account-token-path serves
        // node-1 on the same terms.
        if let Some(anp) = anp() {
            let upstream = cluster.start_upstream_token_agent(&anp, &k, n1, &token1)?;
            bridge
                .wait_for_konnectivity(&n1.name, SEEN)
                .await
                .map_err(|e| anyhow::anyhow!("{e:#}\nproxy-agent log:\n{}", upstream.log()))?;
            let before = dials_ok(&bridge.report().await?, &n1.name).1;
            kubelet_via_connect(&bridge, &cluster, 1).await?;
            assert_eq!(dials_ok(&bridge.report().await?, &n1.name).1, before + 1);
            drop(upstream);
        }

        // Fail closed: with the apiserver gone, a token it never reviewed
        // is refused as unavailable, not waved through.
        drop(cp);
        let ids1 = format!("host={}&ipv4={}", n1.name, n1.address);
        let before = refused(&bridge, "review_unavailable").await?;
        let agent1 = cluster
            .start_token_agent(&k, n1, "agent-node-1", &ids1, &unreviewed)
            .await?;
        wait_refused(
            &bridge,
            &agent1,
            ("review_unavailable", before),
            "cannot check the agent's token",
            SEEN,
        )
        .await?;
        assert!(agent1.log().contains("Unavailable") || agent1.log().contains("unavailable"));
        drop(agent0);
        println!("observed: tokenreview e2e took {:?}", t0.elapsed());
        Ok(())
    })
    .await
}
