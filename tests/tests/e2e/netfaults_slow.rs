//! A lossy, slow link to one node (5 % loss each way by nftables, 50 ms
//! ± 20 ms per chunk by the kit's relay), traffic to every node: streams
//! arrive intact, dials succeed, the health hysteresis keeps the node out
//! of `down`.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::RngCore;
use sshbridge::report::PathState;
use sshbridge_tests::hostkeys::{write_known_hosts, KnownHostsStyle};
use sshbridge_tests::netlab::relay::Relay;
use sshbridge_tests::netlab::Lab;
use sshbridge_tests::{sha256_hex, ssh_state, Bridge, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::netfaults::{all_up, assert_others_clean, traffic_to_all};
use crate::support::within;

/// Bytes per hashed stream.
const STREAM: usize = 512 * 1024;

#[tokio::test]
async fn netns_loss_and_delay_keep_streams_intact_and_the_node_not_down() -> anyhow::Result<()> {
    within(90, async {
        let mut lab = Lab::new()?;
        let cluster = Cluster::in_netns(&mut lab, 2).await?;
        let slow = &cluster.nodes[1];
        let ns = lab.by_node_ip(slow.address).expect("node-1 is in the lab");
        let relay = Relay::start(
            slow.sshd.addr(),
            Duration::from_millis(50),
            Duration::from_millis(20),
        )
        .await?;
        ns.lose(5)?;
        let mut config = cluster.bridge_config()?;
        // The hysteresis this test holds the bridge to: three failed
        // probes in a row for `down` (the kit's 2 is too eager for a lossy
        // link on a loaded 2-core machine: one slow retransmit each of two
        // probes 1 s apart).
        config.down_after = 3;
        config.nodes[1].ssh_address = relay.addr();
        let entries: Vec<_> = config
            .nodes
            .iter()
            .zip(&cluster.nodes)
            .map(|(e, n)| (e.ssh_address, n.sshd.host_key().to_string()))
            .collect();
        write_known_hosts(&config.known_hosts, &entries, KnownHostsStyle::Plain, None)?;
        let bridge = Bridge::start(config, Some(&cluster.nodes[0].kubelet_target())).await?;
        bridge
            .wait_for_report("every node up", Duration::from_secs(40), all_up)
            .await?;
        let start = Instant::now();
        let traffic = traffic_to_all(&cluster, &bridge);
        let states = tokio::spawn({
            let admin = bridge.admin_addr();
            async move {
                let mut seen = BTreeSet::new();
                let until = Instant::now() + Duration::from_secs(15);
                while Instant::now() < until {
                    if let Ok(r) = sshbridge::admin_client::fetch_report(
                        &admin,
                        Duration::from_secs(5),
                    )
                    .await
                    {
                        if let Some(s) = ssh_state(&r, "node-1") {
                            seen.insert(format!("{s:?}"));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                seen
            }
        });
        let hash = slow.hash.addr().to_string();
        for i in 0..4 {
            hash_through(&bridge, &hash, STREAM)
                .await
                .map_err(|e| e.context(format!("stream {i} to node-1")))?;
        }
        let seen = states.await?;
        traffic.stop();
        let to_slow = traffic.to_node_since("node-1", start);
        let failed: Vec<_> = to_slow.iter().filter(|a| a.result.is_err()).collect();
        assert!(
            failed.is_empty(),
            "dials to the lossy node must succeed: {} of {} failed: {failed:?}",
            failed.len(),
            to_slow.len()
        );
        assert!(to_slow.len() >= 10, "too little traffic: {}", to_slow.len());
        assert_others_clean(&traffic, "node-1", start);
        assert!(
            !seen.contains(&format!("{:?}", PathState::Down)),
            "5% loss and 50ms delay must not take node-1 down (down_after = 3); states seen: {seen:?}"
        );
        let p = |node: &str| percentile(&traffic, node, start, 99);
        eprintln!(
            "netfaults: loss+delay: node-1 states {seen:?}, {} dials ok, p99 dial {:?} (node-0 {:?})",
            to_slow.len(),
            p("node-1"),
            p("node-0")
        );
        Ok(())
    })
    .await
}

/// Sends `len` random bytes to the hash pod at `target` and checks the
/// SHA-256 it answers.
async fn hash_through(bridge: &Bridge, target: &str, len: usize) -> anyhow::Result<()> {
    let c = bridge.egress().connect(target).await?;
    anyhow::ensure!(c.status == 200, "CONNECT {target}: {c:?}");
    let mut stream = c.stream;
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    let io = async {
        stream.write_all(&data).await?;
        stream.shutdown().await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), io)
        .await
        .map_err(|_| anyhow::anyhow!("hash stream did not finish in 30s"))??;
    anyhow::ensure!(
        answer.trim() == sha256_hex(&data),
        "the stream arrived changed: hash {answer:?}"
    );
    Ok(())
}

/// The `pct` percentile of the dial latencies to `node` since `from`.
pub fn percentile(
    traffic: &sshbridge_tests::netlab::traffic::Traffic,
    node: &str,
    from: Instant,
    pct: usize,
) -> Option<Duration> {
    let mut d: Vec<Duration> = traffic
        .to_node_since(node, from)
        .iter()
        .map(|a| a.dial)
        .collect();
    d.sort();
    let i = (d.len() * pct / 100).min(d.len().checked_sub(1)?);
    d.get(i).copied()
}
