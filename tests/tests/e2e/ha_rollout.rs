//! Issue 13's acceptance with real processes: three `sshbridge run` on one
//! shared migration record and one Lease in a real kube-apiserver v1.20.2,
//! three real sshd nodes, and on each node one `sshbridge agent` that
//! reaches all three bridges through a load balancer (`server_count = 3`).
//! Traffic runs through every bridge the whole time. One bridge is cut
//! off from the apiserver before the rollout (a gate that goes silent, as
//! a partition does); the rollout is applied with the leader's CLI (a
//! follower's CLI refuses and names the leader); the leader is killed
//! with SIGKILL in the middle of a batch; the other bridge finishes the rollout
//! from the record without cutting a node over twice; the killed bridge
//! comes back as a follower. The cut-off bridge keeps serving on the
//! routes it last saw, takes no step, and catches up once the gate heals.
//! No request fails on a bridge that was not killed.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sshbridge::report::PathState;
use sshbridge_config::Route;
use sshbridge_migrate::{NodePhase, RunPhase, Status};
use sshbridge_tests::bridge::bridge_bin;
use sshbridge_tests::gate::Gate;
use sshbridge_tests::inventory::api_only;
use sshbridge_tests::lb::LoadBalancer;
use sshbridge_tests::{
    konnectivity_path, net, phase_of, sshbridge_cli, Agent, Bridge, BridgeConfig, Cluster,
    KonnectivityConfig, Load,
};

use crate::ha_flips::{Flips, ROLLOUT, SAMPLE};
use crate::ha_leader::agreed_leader;
use crate::support::within;
use crate::upstream_common::observed;

const BRIDGES: usize = 3;
const NODES: usize = 3;
/// Lease timing (kube-controller-manager's 15s/10s/2s, scaled down).
const LEASE: Duration = Duration::from_secs(4);
/// Bound on agents, paths and the rollout's steps.
const UP: Duration = Duration::from_secs(30);

/// Bridge `i`'s config: its own directory, id and Konnectivity port, the
/// apiserver through `kubeconfig`, the shared record and Lease.
fn bridge(
    cluster: &Cluster,
    k: &KonnectivityConfig,
    i: usize,
    kubeconfig: &Path,
) -> anyhow::Result<(BridgeConfig, KonnectivityConfig)> {
    let mut c = cluster.bridge_config()?;
    c.dir = cluster.dir.path().join(format!("bridge-{i}"));
    std::fs::create_dir_all(&c.dir)?;
    c.uds = c.dir.join("egress.sock");
    c.extra_bridge_lines = vec![
        format!("id = \"cp-{i}\""),
        "[kubernetes]".into(),
        format!("kubeconfig = {:?}", kubeconfig.display().to_string()),
    ];
    // An inline table, so that the kit's migration keys that follow stay
    // in [migration].
    c.migration = Some(format!(
        "store = \"kubernetes:default/sshbridge-migration\"\n\
         leader_election = {{ lease_duration = \"{}s\", renew_deadline = \"3s\", \
         retry_period = \"500ms\" }}\n",
        LEASE.as_secs()
    ));
    let mut k = k.clone();
    let ip: IpAddr = [127, 0, 0, 1].into();
    k.agent_listen = SocketAddr::new(ip, net::free_port(ip)?);
    k.grpc_uds = None;
    k.extra = format!("server_count = {BRIDGES}\n");
    Ok((c, k))
}

/// The admin kubeconfig with its server moved to `addr`.
fn kubeconfig_via(admin: &Path, addr: SocketAddr, out: PathBuf) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(admin)?;
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .ok_or_else(|| anyhow::anyhow!("no server in {}", admin.display()))?
        .to_owned();
    std::fs::write(&out, text.replace(&server, &format!("https://{addr}")))?;
    Ok(out)
}

/// Starts bridge `(c, k)` and waits for its admin API.
async fn start_bridge(c: &BridgeConfig, k: &KonnectivityConfig) -> anyhow::Result<Bridge> {
    let b = Bridge::start_with(c.clone(), Some(k.clone()), None).await?;
    b.wait_for_report("its admin API", UP, |_| true).await?;
    Ok(b)
}

/// Bridge `b` serves every node over `route`.
async fn routes_are(b: &Bridge, route: Route) -> anyhow::Result<bool> {
    Ok(b.report().await?.nodes.iter().all(|n| n.route == route))
}

#[tokio::test]
async fn three_bridges_roll_out_through_a_leader_kill_and_a_partition_with_no_failed_request(
) -> anyhow::Result<()> {
    within(300, async {
        let start = Instant::now();
        let cluster = Cluster::builder().nodes(NODES).build().await?;
        let cp = api_only(
            &cluster.pki,
            &cluster.ca_path,
            &cluster.dir.path().join("cp"),
        )
        .await?;
        let apiserver: SocketAddr = {
            let text = std::fs::read_to_string(cp.kubeconfig())?;
            let server = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("server: https://"))
                .ok_or_else(|| anyhow::anyhow!("no server in the kubeconfig"))?;
            server.parse()?
        };
        // Bridge cp-2 reaches the apiserver only through the gate.
        let gate = Gate::start(apiserver).await?;
        let gated = kubeconfig_via(
            cp.kubeconfig(),
            gate.addr,
            cluster.dir.path().join("kubeconfig-gated"),
        )?;
        let base = cluster.konnectivity_config(&cluster.bridge_config()?)?;
        let mut configs = Vec::new();
        for i in 0..BRIDGES {
            let kc = if i == 2 { &gated } else { cp.kubeconfig() };
            configs.push(bridge(&cluster, &base, i, kc)?);
        }
        let lb = LoadBalancer::start(configs.iter().map(|(_, k)| k.agent_listen).collect()).await?;

        // cp-0 and cp-1 first, so that the leader is one of them; then cp-2.
        let mut bridges = Vec::new();
        for (c, k) in configs.iter().take(2) {
            bridges.push(start_bridge(c, k).await?);
        }
        let ids = ["cp-0", "cp-1", "cp-2"];
        let two: Vec<(&Bridge, &str)> = bridges.iter().zip(ids).collect();
        let leader = agreed_leader(&two, UP).await?;
        let other = 1 - leader;
        bridges.push(start_bridge(&configs[2].0, &configs[2].1).await?);
        let all: Vec<(&Bridge, &str)> = bridges.iter().zip(ids).collect();
        anyhow::ensure!(
            agreed_leader(&all, UP).await? == leader,
            "the leader changed when cp-2 joined"
        );

        // One agent per node, through the balancer, on every bridge.
        let mut agents = Vec::new();
        for node in &cluster.nodes {
            let mut spec = cluster.agent_spec(&configs[0].1, node);
            spec.server = lb.addr.to_string();
            agents.push(Agent::start(spec).await?);
        }
        for b in &bridges {
            b.wait_for_report("three agents and every path up", UP, |r| {
                r.nodes.len() == NODES
                    && r.nodes.iter().all(|n| {
                        n.paths.ssh.state == PathState::Up
                            && konnectivity_path(r, &n.name)
                                .is_some_and(|p| p.state == PathState::Up && p.agents == Some(1))
                    })
            })
            .await?;
        }
        observed(&format!(
            "3 bridges, {NODES} nodes, agents on every bridge after {:?}",
            start.elapsed()
        ));
        let mut loads: Vec<Option<Load>> = bridges
            .iter()
            .map(|b| Load::start(b, &cluster).map(Some))
            .collect::<anyhow::Result<_>>()?;

        // cp-2 loses the apiserver.
        gate.cut();
        let cut = Instant::now();

        // A follower's CLI refuses and names the leader; the leader's
        // applies.
        let refused = sshbridge_cli([
            "migrate",
            "apply",
            "--batch-size",
            "1",
            "--admin",
            &bridges[other].admin_arg(),
        ])
        .await?;
        anyhow::ensure!(
            refused.code != Some(0)
                && refused
                    .stderr
                    .contains(&format!("send it to the leader, bridge {}", ids[leader])),
            "apply on the follower {}: {refused:?}",
            ids[other]
        );
        // `migrate apply` follows the rollout until it ends, through its
        // bridge's kill and restart (it waits 30 s for an admin API).
        let applying = tokio::process::Command::new(bridge_bin()?)
            .args(["migrate", "apply", "--batch-size", "1", "--soak", "4s"])
            .args(["--admin", &bridges[leader].admin_arg()])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let applying = tokio::spawn(tokio::time::timeout(ROLLOUT, applying));

        // The leader drives; the other follows. While the second batch
        // (node-1) is under way, the leader is killed.
        let mut flips = Flips::default();
        let live = [(leader, &bridges[leader]), (other, &bridges[other])];
        let at_kill = flips
            .sample_until(&live, &bridges[leader], "node-1 under way", |s| {
                matches!(
                    phase_of(s, "node-1"),
                    NodePhase::Shadow | NodePhase::Cutover | NodePhase::Soak
                )
            })
            .await?;
        let transitions = |s: &Status| s.nodes.iter().map(|n| n.history.len()).sum::<usize>();
        let before = transitions(&at_kill);
        let counts = loads[leader]
            .take()
            .expect("the leader's load")
            .stop()
            .await?;
        anyhow::ensure!(
            counts.failed == 0,
            "{} before its kill: {:#?}",
            ids[leader],
            counts.failures
        );
        bridges[leader].kill().await;
        let killed = Instant::now();

        // The other bridge resumes from the record.
        flips
            .sample_until(
                &[(other, &bridges[other])],
                &bridges[other],
                "the first step after the kill",
                |s| transitions(s) > before,
            )
            .await?;
        let resumed = killed.elapsed();
        anyhow::ensure!(
            resumed < LEASE * 3,
            "the rollout resumed {resumed:?} after the leader's kill (lease {LEASE:?})"
        );

        // The killed bridge comes back and follows.
        bridges[leader] = start_bridge(&configs[leader].0, &configs[leader].1).await?;
        let live = [(other, &bridges[other]), (leader, &bridges[leader])];
        let finished = flips
            .sample_until(&live, &bridges[other], "the rollout finished", |s| {
                s.phase == RunPhase::Finished
                    && cluster
                        .nodes
                        .iter()
                        .all(|n| phase_of(s, &n.name) == NodePhase::Done)
            })
            .await?;
        for n in &finished.nodes {
            let cutovers = n
                .history
                .iter()
                .filter(|t| t.to == NodePhase::Cutover)
                .count();
            anyhow::ensure!(
                cutovers == 1 && n.history.iter().all(|t| t.to != NodePhase::RolledBack),
                "{} cut over {cutovers} time(s): {:#?}",
                n.name,
                n.history
            );
        }
        let cli = applying
            .await?
            .map_err(|_| anyhow::anyhow!("`migrate apply` still following"))??;
        let (out, err) = (
            String::from_utf8_lossy(&cli.stdout),
            String::from_utf8_lossy(&cli.stderr),
        );
        anyhow::ensure!(
            cli.status.success() && err.contains("retrying"),
            "`migrate apply` through its bridge's kill and restart: {}\n{out}\n{err}",
            cli.status
        );
        let restarted = &bridges[leader];
        restarted
            .wait_for_report("the restarted bridge on the record's routes", UP, |r| {
                r.nodes.iter().all(|n| n.route == Route::Konnectivity)
            })
            .await?;
        let restarted_load = Load::start(restarted, &cluster)?;

        // cp-2 saw none of it: still on ssh everywhere, serving.
        anyhow::ensure!(
            routes_are(&bridges[2], Route::Ssh).await?,
            "cp-2, cut off from the apiserver, changed routes"
        );
        let (code, body) = bridges[2].migration_answer("pause", "{}").await?;
        anyhow::ensure!(
            code != 200,
            "cp-2 took a migration step while cut off: {body}"
        );
        let partitioned = cut.elapsed();
        gate.heal();
        let healed = Instant::now();
        bridges[2]
            .wait_for_report("cp-2 on the record's routes after the partition", UP, |r| {
                r.nodes.iter().all(|n| n.route == Route::Konnectivity)
            })
            .await?;
        let caught_up = healed.elapsed();

        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut served = Vec::new();
        for (i, load) in loads.iter_mut().enumerate() {
            if let Some(load) = load.take() {
                let c = load.stop().await?;
                anyhow::ensure!(c.failed == 0, "{}: {:#?}", ids[i], c.failures);
                served.push(format!("{}: {}", ids[i], c.total_ok()));
            }
        }
        let c = restarted_load.stop().await?;
        anyhow::ensure!(
            c.failed == 0,
            "{} after restart: {:#?}",
            ids[leader],
            c.failures
        );
        served.push(format!("{} restarted: {}", ids[leader], c.total_ok()));

        // Route propagation: the follower's switch after the driver's.
        let mut lags: Vec<Duration> = Vec::new();
        for n in ["node-0", "node-1"] {
            lags.extend(flips.lag(leader, other, n));
        }
        lags.extend(flips.lag(other, leader, "node-2"));
        lags.sort();
        anyhow::ensure!(
            lags.len() == NODES,
            "route switches seen for {} of {NODES} nodes",
            lags.len()
        );
        let max = *lags.last().expect("three lags");
        anyhow::ensure!(
            max <= Duration::from_secs(1),
            "a follower applied a route {max:?} after the leader (all: {lags:?})"
        );
        observed(&format!(
            "ha rollout: resumed {resumed:?} after the leader's kill; route propagation \
             {lags:?} (sampled every {SAMPLE:?}); cp-2 cut off {partitioned:?}, caught up \
             {caught_up:?} after the heal; requests ok {served:?}; took {:?}",
            start.elapsed()
        ));
        drop(agents);
        Ok(())
    })
    .await
}
