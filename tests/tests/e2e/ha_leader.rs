//! One driver, many followers (issue 13, item 3) with real processes: two
//! `sshbridge run` on one shared migration record (`kubernetes:` store)
//! and one Lease, against a real kube-apiserver v1.20.2. Exactly one
//! leads and the other refuses rollout commands naming it; kill -9 of the
//! leader hands the migration to the other within the Lease's duration; a
//! clean stop (SIGTERM) releases the Lease and hands over within about one
//! retry period. Egress through the surviving bridge works throughout.

use std::path::Path;
use std::time::{Duration, Instant};

use sshbridge_tests::inventory::api_only;
use sshbridge_tests::{Bridge, BridgeConfig, Cluster};

use crate::support::within;

/// Lease timing of the test (kube-controller-manager's 15s/10s/2s, scaled).
const LEASE: Duration = Duration::from_secs(4);
const RETRY: Duration = Duration::from_millis(500);

fn shared(mut c: BridgeConfig, id: &str, kubeconfig: &Path) -> BridgeConfig {
    c.extra_bridge_lines = vec![
        format!("id = {id:?}"),
        "[kubernetes]".into(),
        format!("kubeconfig = {:?}", kubeconfig.display().to_string()),
    ];
    c.migration = Some(format!(
        "store = \"kubernetes:default/sshbridge-migration\"\n\
         [migration.leader_election]\nlease_duration = \"{}s\"\n\
         renew_deadline = \"3s\"\nretry_period = \"{}ms\"\n",
        LEASE.as_secs(),
        RETRY.as_millis()
    ));
    c
}

/// Who a bridge says leads: itself (`Some(own id)`), another bridge
/// (`Some(that id)`), or nobody yet (`None`). A rollout command that a
/// leader refuses for its phase ("pause" with no rollout) and a follower
/// refuses naming the leader tells them apart.
pub(crate) async fn leader_seen_by(bridge: &Bridge, own: &str) -> anyhow::Result<Option<String>> {
    let (_, body) = bridge.migration_answer("pause", "{}").await?;
    if let Some(rest) = body.split("send it to the leader, bridge ").nth(1) {
        let id: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        return Ok(Some(id));
    }
    if body.contains("does not drive the migration") || body.contains("is starting") {
        return Ok(None);
    }
    anyhow::ensure!(
        body.contains("applies only to a running rollout"),
        "{own}: unexpected answer to pause: {body}"
    );
    Ok(Some(own.to_owned()))
}

/// Waits until every bridge of `live` agrees that one of them leads;
/// returns its index.
pub(crate) async fn agreed_leader(
    live: &[(&Bridge, &str)],
    bound: Duration,
) -> anyhow::Result<usize> {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        for (b, id) in live {
            seen.push(leader_seen_by(b, id).await?);
        }
        if let Some(Some(first)) = seen.first() {
            if seen.iter().all(|s| s.as_deref() == Some(first)) {
                if let Some(i) = live.iter().position(|(_, id)| id == first) {
                    return Ok(i);
                }
            }
        }
        anyhow::ensure!(
            start.elapsed() < bound,
            "no agreed leader within {bound:?}: the bridges say {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_bridges_on_one_record_elect_one_leader_and_hand_over_on_kill_and_on_stop(
) -> anyhow::Result<()> {
    within(240, async {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let cp = api_only(
            &cluster.pki,
            &cluster.ca_path,
            &cluster.dir.path().join("cp"),
        )
        .await?;
        let target = cluster.nodes[0].echo.addr().to_string();
        let one = shared(cluster.bridge_config()?, "cp-1", cp.kubeconfig());
        let mut two = shared(cluster.bridge_config()?, "cp-2", cp.kubeconfig());
        two.dir = cluster.dir.path().join("bridge-2");
        std::fs::create_dir_all(&two.dir)?;
        two.uds = two.dir.join("egress.sock");
        let mut bridges = [
            Bridge::start(one, Some(&target)).await?,
            Bridge::start(two, Some(&target)).await?,
        ];
        let ids = ["cp-1", "cp-2"];

        // One leads, the other follows and names it.
        let both: Vec<(&Bridge, &str)> = bridges.iter().zip(ids).collect();
        let leader = agreed_leader(&both, Duration::from_secs(30)).await?;
        let follower = 1 - leader;
        println!("leader: {}", ids[leader]);

        // kill -9 of the leader: the follower leads once the Lease expires
        // (it never saw a release), and keeps serving egress meanwhile.
        bridges[leader].kill().await;
        let killed = Instant::now();
        bridges[follower]
            .wait_for_status(&target, 200, Duration::from_secs(10))
            .await?;
        let only: Vec<(&Bridge, &str)> = vec![(&bridges[follower], ids[follower])];
        agreed_leader(&only, LEASE * 3).await?;
        let failover = killed.elapsed();
        println!("takeover after kill -9: {failover:?}");
        anyhow::ensure!(
            failover <= LEASE + RETRY * 4 + Duration::from_secs(2),
            "takeover took {failover:?}, lease {LEASE:?}"
        );

        // The killed bridge comes back as a follower of the new leader.
        let config = bridges[leader].config.clone();
        bridges[leader] = Bridge::start(config, Some(&target)).await?;
        let both: Vec<(&Bridge, &str)> = bridges.iter().zip(ids).collect();
        let now = agreed_leader(&both, Duration::from_secs(30)).await?;
        anyhow::ensure!(now == follower, "the restarted bridge took the lead");

        // A clean stop releases the Lease: the other leads within about a
        // retry period, not a whole lease duration.
        bridges[follower].sigterm()?;
        let stopped = Instant::now();
        bridges[follower].wait_exit(Duration::from_secs(30)).await?;
        let only: Vec<(&Bridge, &str)> = vec![(&bridges[leader], ids[leader])];
        agreed_leader(&only, LEASE * 3).await?;
        let handover = stopped.elapsed();
        println!("handover after SIGTERM: {handover:?}");
        anyhow::ensure!(
            handover < LEASE,
            "handover after a release took {handover:?}, as long as an expiry ({LEASE:?})"
        );
        anyhow::ensure!(
            bridges[follower]
                .log()
                .contains("released the migration Lease"),
            "the stopped leader did not say it released the Lease"
        );
        bridges[leader]
            .wait_for_status(&target, 200, Duration::from_secs(10))
            .await?;
        Ok(())
    })
    .await
}
