//! Trust boundaries end to end: an agent serves only the node its
//! certificate names (real `sshbridge agent` processes, real mTLS), and a
//! TCP admin API answers only callers that authenticate.

use std::time::Duration;

use sshbridge::report::PathState;
use sshbridge_tests::{dials_ok, konnectivity_state, Agent, Bridge, Cluster};

use crate::support::{konnectivity_setup, within};

/// Bound for a refusal to be seen or a path to come up on a busy box.
const SEEN: Duration = Duration::from_secs(30);

/// `sshbridge_konnectivity_agents_refused_total{reason}` from `/metrics`.
async fn refused(bridge: &Bridge, reason: &str) -> anyhow::Result<u64> {
    let metrics = bridge.admin_get("/metrics").await?.body;
    let series = format!("sshbridge_konnectivity_agents_refused_total{{reason=\"{reason}\"}} ");
    Ok(metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Waits until the bridge counted a refusal for `reason` and the agent's
/// own log shows the refusal's message.
async fn wait_refused(
    bridge: &Bridge,
    agent: &Agent,
    reason: &str,
    says: &str,
) -> anyhow::Result<()> {
    let wait = async {
        loop {
            if refused(bridge, reason).await? >= 1 && agent.log().contains(says) {
                return Ok::<_, anyhow::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(SEEN, wait).await.map_err(|_| {
        anyhow::anyhow!(
            "no refusal {reason:?} saying {says:?} for {}; agent log:\n{}",
            agent.spec.agent_id,
            agent.log_tail(20)
        )
    })?
}

#[tokio::test]
async fn an_agent_with_node_a_certificate_cannot_serve_node_b() -> anyhow::Result<()> {
    within(180, async {
        // node-0 is "node-a" (no agent of its own), node-1 is "node-b",
        // served by its real agent.
        let s = konnectivity_setup(2, &[1], &[1], |_| {}).await?;
        let (cluster, bridge) = (&s.cluster, &s.bridge);
        let k = bridge.konnectivity.clone().unwrap();
        let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
        let real = s.agents[1].as_ref().unwrap();
        let connects = |a: &Agent| {
            a.log()
                .matches("connected to the Konnectivity server")
                .count()
        };
        let real_connects = connects(real);
        assert_eq!(real_connects, 1, "{}", real.log_tail(20));

        // Each impostor presents node-a's certificate and claims node-b
        // one way: by name, by address, by pod CIDR, by node-b's agent ID.
        let impostors = [
            (
                "imp-host",
                format!("host={}", b.name),
                "host",
                format!("claims host={}", b.name),
            ),
            (
                "imp-ipv4",
                format!("ipv4={}", b.address),
                "address",
                format!("claims address {}", b.address),
            ),
            (
                "imp-cidr",
                format!("cidr={}", b.pod_cidr),
                "cidr",
                format!("claims cidr={}", b.pod_cidr),
            ),
            (
                "agent-node-1",
                format!("host={}", a.name),
                "agent_id_taken",
                "already held by an agent of node-1".to_string(),
            ),
        ];
        let mut running = Vec::new();
        for (id, ids, reason, says) in impostors {
            let mut spec = cluster.agent_spec(&k, a);
            spec.agent_id = id.into();
            spec.identifiers = ids;
            // Its own log, apart from the real agent-node-1's.
            spec.dir = cluster.dir.path().join("impostors");
            std::fs::create_dir_all(&spec.dir)?;
            let agent = Agent::start(spec).await?;
            wait_refused(bridge, &agent, reason, &says).await?;
            running.push(agent);
        }
        let log = bridge.log();
        assert!(
            log.contains("Konnectivity agent refused") && log.contains("CN=system:node:node-0"),
            "the refusal is logged with the certificate subject"
        );

        // node-b's traffic all goes to its real agent, which was never
        // replaced; no impostor carried a single connection.
        let before = dials_ok(&bridge.report().await?, &b.name);
        for _ in 0..5 {
            crate::support::kubelet_via_connect(bridge, cluster, 1).await?;
        }
        let report = bridge.report().await?;
        let after = dials_ok(&report, &b.name);
        assert_eq!(
            after.1,
            before.1 + 5,
            "5 dials over node-b's konnectivity path"
        );
        assert_eq!(
            (
                connects(real),
                real.log()
                    .contains("stream to the Konnectivity server ended"),
            ),
            (real_connects, false),
            "node-b's agent lost its stream:\n{}",
            real.log_tail(20)
        );
        assert!(
            !bridge.log().contains("stream replaced"),
            "an agent stream was replaced"
        );
        assert_ne!(
            konnectivity_state(&report, &a.name),
            PathState::Up,
            "an impostor serves node-a"
        );
        for agent in &running {
            assert!(
                !agent.log().contains("connection established"),
                "{} carried a connection:\n{}",
                agent.spec.agent_id,
                agent.log_tail(20)
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_certificate_that_names_no_node_is_refused() -> anyhow::Result<()> {
    within(150, async {
        let s = konnectivity_setup(1, &[0], &[], |_| {}).await?;
        let (cluster, bridge) = (&s.cluster, &s.bridge);
        let k = bridge.konnectivity.clone().unwrap();
        let node = &cluster.nodes[0];
        let mut spec = cluster.agent_spec(&k, node);
        // Signed by the right CA, truthful claims, but CN konnectivity-agent.
        spec.identity = Some(k.agent_identity.clone());
        spec.agent_id = "shared-cert".into();
        let agent = Agent::start(spec).await?;
        wait_refused(bridge, &agent, "unknown_node", "names no configured node").await?;
        let report = bridge.report().await?;
        assert_ne!(konnectivity_state(&report, &node.name), PathState::Up);
        let c = bridge.egress().connect(&node.kubelet_target()).await?;
        assert_eq!(c.status, 503, "no agent may serve node-0: {c:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_impostor_cannot_pass_the_shadow_probes_of_another_node() -> anyhow::Result<()> {
    within(180, async {
        let cluster = Cluster::builder().nodes(2).build().await?;
        let mut config = cluster.bridge_config()?;
        // Without kubelet_ca a probe checks only that the path carries a
        // connection, which an impostor on this machine could do.
        config.kubelet_ca = None;
        let k = cluster.konnectivity_config(&config)?;
        let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
        let _real_b = cluster.start_agent(&k, b).await?;
        // node-b's certificate, claiming node-a, which has no agent.
        let mut spec = cluster.agent_spec(&k, b);
        spec.agent_id = "impostor".into();
        spec.identifiers = format!("host={}&ipv4={}", a.name, a.address);
        let impostor = Agent::start(spec).await?;
        let bridge = Bridge::start_with(config, Some(k), Some(&a.kubelet_target())).await?;
        bridge.wait_for_konnectivity(&b.name, SEEN).await?;
        wait_refused(&bridge, &impostor, "host", "claims host=node-0").await?;

        let plan = bridge.migration_plan("{}").await?;
        assert!(
            plan.not_ready.iter().any(|e| e.node == a.name),
            "node-a has no agent of its own and must not be ready: {plan:?}"
        );
        bridge
            .migration_post("apply", r#"{"batch_size":{"count":2}}"#)
            .await?;
        let status = bridge
            .wait_for_migration("node-b done", Duration::from_secs(60), |s| {
                sshbridge_tests::phase_of(s, &b.name) == sshbridge_migrate::NodePhase::Done
            })
            .await?;
        assert_eq!(
            sshbridge_tests::phase_of(&status, &a.name),
            sshbridge_migrate::NodePhase::Ssh,
            "node-a was moved onto the impostor: {status:?}"
        );
        let report = bridge.report().await?;
        assert_ne!(konnectivity_state(&report, &a.name), PathState::Up);
        assert!(
            !impostor.log().contains("connection established"),
            "{}",
            impostor.log_tail(20)
        );
        Ok(())
    })
    .await
}
