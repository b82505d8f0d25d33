//! A node's agent link flapping every few seconds for a minute, half the
//! flaps silent (packets dropped both ways) and half forgetful (the
//! agent's sockets destroyed under the drop, the bridge's side left
//! half-open), with traffic to every node: afterwards the bridge holds no
//! more file descriptors, threads and streams than before, and its RSS is
//! back near where it was.

use std::time::Duration;

use sshbridge_config::Route;
use sshbridge_tests::netlab::procstat::ProcStat;
use sshbridge_tests::netlab::Lab;
use sshbridge_tests::{Bridge, Cluster};
use tokio::time::Instant;

use crate::netfaults::{all_up, assert_others_clean, traffic_to_all};
use crate::support::{kubelet_via_connect, within};

/// How long the link flaps.
const FLAPPING: Duration = Duration::from_secs(60);
/// Link down, then up, in each flap.
const DOWN: Duration = Duration::from_secs(2);
const UP: Duration = Duration::from_secs(2);
/// File descriptors the bridge may hold above its baseline afterwards.
const FD_SLACK: usize = 2;
/// Bound on the bridge's server-side cleanup of half-open agent
/// connections (HTTP/2 keepalive 10 s + timeout 20 s) and then some.
const SETTLE: Duration = Duration::from_secs(40);

#[tokio::test]
async fn netns_agent_link_flaps_leak_nothing() -> anyhow::Result<()> {
    within(170, async {
        let mut lab = Lab::new()?;
        let cluster = Cluster::in_netns(&mut lab, 2).await?;
        let (ns0, ns1) = (lab.namespaces()[0].clone(), lab.namespaces()[1].clone());
        let config = cluster.bridge_config()?;
        let mut k = cluster.netns_konnectivity_config(&config, &ns0)?;
        k.route("node-1", Route::Konnectivity);
        let port = k.agent_listen.port();
        let _a0 = cluster
            .start_netns_agent(&k, &cluster.nodes[0], &ns0)
            .await?;
        let a1 = cluster
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
        let pid = bridge.pid().expect("the bridge runs");
        // Warm up (pools, buffers), then the baseline with nothing in flight.
        drop(warm_up(&cluster, &bridge).await?);
        let base = ProcStat::of(pid)?;
        let base_streams = metric_sum(&bridge, "sshbridge_streams_active").await?;
        let base_connects = connects(&a1);
        let start = Instant::now();
        let traffic = traffic_to_all(&cluster, &bridge);
        let mut flaps = 0;
        let mut peak = base;
        while start.elapsed() < FLAPPING {
            ns1.cut_port(port)?;
            if flaps % 2 == 1 {
                ns1.forget_tcp(port)?;
            }
            tokio::time::sleep(DOWN).await;
            ns1.heal()?;
            tokio::time::sleep(UP).await;
            flaps += 1;
            let now = ProcStat::of(pid)?;
            peak.fds = peak.fds.max(now.fds);
            peak.rss_kib = peak.rss_kib.max(now.rss_kib);
            peak.threads = peak.threads.max(now.threads);
        }
        let healed = Instant::now();
        bridge
            .wait_for_konnectivity("node-1", Duration::from_secs(30))
            .await?;
        let back = healed.elapsed();
        traffic.stop();
        assert_others_clean(&traffic, "node-1", start);
        kubelet_via_connect(&bridge, &cluster, 1).await?;
        drop(warm_up(&cluster, &bridge).await?);
        // Wait for the count to come back (half-open agent connections
        // live until the server's keepalive gives up on them).
        let settle = Instant::now();
        let mut after = ProcStat::of(pid)?;
        while after.fds > base.fds + FD_SLACK && settle.elapsed() < SETTLE {
            tokio::time::sleep(Duration::from_millis(500)).await;
            after = ProcStat::of(pid)?;
        }
        let streams = metric_sum(&bridge, "sshbridge_streams_active").await?;
        let reconnects = connects(&a1) - base_connects;
        eprintln!(
            "netfaults: agent flaps: {flaps} flaps in {FLAPPING:?}; konnectivity back {back:?} \
             after; fds {} -> peak {} -> {} (settled in {:?}); rss {} KiB -> peak {} -> {} KiB; \
             threads {} -> peak {} -> {}; streams_active {base_streams} -> {streams}; \
             node-1's agent reconnected {reconnects} times",
            base.fds,
            peak.fds,
            after.fds,
            settle.elapsed(),
            base.rss_kib,
            peak.rss_kib,
            after.rss_kib,
            base.threads,
            peak.threads,
            after.threads
        );
        // The flaps really cut the agent off (else nothing was tested).
        assert!(reconnects >= 1, "no flap made node-1's agent reconnect");
        assert!(
            after.fds <= base.fds + FD_SLACK,
            "the bridge leaked file descriptors: {} before, {} after",
            base.fds,
            after.fds
        );
        assert!(
            streams <= base_streams,
            "streams left open: {base_streams} before, {streams} after"
        );
        assert!(
            after.threads <= base.threads + 4,
            "threads grew: {} -> {}",
            base.threads,
            after.threads
        );
        // Allocator pages may stay mapped; growth beyond this is a leak.
        let rss_bound = base.rss_kib + (base.rss_kib / 4).max(8 * 1024);
        assert!(
            after.rss_kib <= rss_bound,
            "RSS did not come back near its baseline: {} KiB -> {} KiB",
            base.rss_kib,
            after.rss_kib
        );
        Ok(())
    })
    .await
}

/// A few seconds of traffic to every node, all of it successful.
async fn warm_up(
    cluster: &Cluster,
    bridge: &Bridge,
) -> anyhow::Result<sshbridge_tests::netlab::traffic::Traffic> {
    let from = Instant::now();
    let traffic = traffic_to_all(cluster, bridge);
    tokio::time::sleep(Duration::from_secs(3)).await;
    traffic.stop();
    // The loop's attempt in flight ends with the stop; let it close.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let failed: Vec<_> = traffic
        .attempts()
        .into_iter()
        .filter(|a| a.at >= from && a.result.is_err())
        .collect();
    anyhow::ensure!(failed.is_empty(), "warm-up traffic failed: {failed:?}");
    Ok(traffic)
}

/// Times `agent` connected to the server, from its log.
fn connects(agent: &sshbridge_tests::Agent) -> usize {
    agent
        .log()
        .matches("connected to the Konnectivity server")
        .count()
}

/// Metric `name`, summed over its labels.
async fn metric_sum(bridge: &Bridge, name: &str) -> anyhow::Result<f64> {
    let body = bridge.metrics().await?;
    Ok(body
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}
