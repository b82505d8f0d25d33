//! Agents reach every bridge (issue 13, item 1): three `sshbridge run`
//! processes (`[bridge] id` bridge-0..2, `server_count = 3`) behind one TCP
//! load balancer (round-robin, the bridges' certificates valid for its
//! address), one real node. `sshbridge agent`, given only the balancer's
//! address, ends up with a stream to each bridge, and the node's kubelet
//! answers through each bridge's Konnectivity path; with one bridge
//! killed it keeps the other two (their traffic flows while it keeps
//! dialing duplicates), and it returns to the restarted bridge. With
//! `ANP_BIN`, upstream's proxy-agent does the same against the three.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use sshbridge::report::{PathState, Report};
use sshbridge_config::Route;
use sshbridge_tests::lb::LoadBalancer;
use sshbridge_tests::upstream::{http_get, UpstreamAgent};
use sshbridge_tests::{
    dials_ok, konnectivity_path, net, Agent, Bridge, BridgeConfig, Cluster, KonnectivityConfig,
};

use crate::support::{kubelet_via_connect, within};
use crate::upstream_common::{anp, observed};

/// Bound for an agent to reach a bridge and a probe through it to pass.
const UP: Duration = Duration::from_secs(30);
const BRIDGES: usize = 3;

/// Three bridges for one cluster, each with its own directory, id and
/// Konnectivity port.
struct Ha {
    cluster: Cluster,
    bridges: Vec<Bridge>,
    configs: Vec<(BridgeConfig, KonnectivityConfig)>,
    lb: LoadBalancer,
}

impl Ha {
    async fn start() -> anyhow::Result<Ha> {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let base = cluster.bridge_config()?;
        // The server certificate is for 127.0.0.1: every bridge and the
        // balancer listen there.
        let k = cluster.konnectivity_config(&base)?;
        let ip: IpAddr = [127, 0, 0, 1].into();
        let mut configs = Vec::new();
        let mut bridges = Vec::new();
        for i in 0..BRIDGES {
            let mut config = base.clone();
            config.dir = cluster.dir.path().join(format!("bridge-{i}"));
            std::fs::create_dir_all(&config.dir)?;
            config.uds = config.dir.join("egress.sock");
            config
                .extra_bridge_lines
                .push(format!("id = \"bridge-{i}\""));
            let mut k = k.clone();
            k.agent_listen = SocketAddr::new(ip, net::free_port(ip)?);
            k.grpc_uds = None;
            k.route("node-0", Route::Konnectivity);
            k.extra = format!("server_count = {BRIDGES}\n");
            bridges.push(Bridge::start_with(config.clone(), Some(k.clone()), None).await?);
            configs.push((config, k));
        }
        let lb = LoadBalancer::start(configs.iter().map(|(_, k)| k.agent_listen).collect()).await?;
        Ok(Ha {
            cluster,
            bridges,
            configs,
            lb,
        })
    }

    /// Waits until bridge `i` counts `n` agents of node-0 and its
    /// Konnectivity path is up.
    async fn wait_agents(&self, i: usize, n: u64) -> anyhow::Result<()> {
        let what = format!("bridge-{i}: {n} agent(s) of node-0, konnectivity up");
        self.bridges[i]
            .wait_for_report(&what, UP, |r| {
                konnectivity_path(r, "node-0")
                    .is_some_and(|p| p.agents == Some(n) && p.state == PathState::Up)
            })
            .await
            .map(drop)
    }

    /// A kubelet request through bridge `i`, which must go over its
    /// Konnectivity path.
    async fn request(&self, i: usize) -> anyhow::Result<()> {
        let before = self.bridges[i].report().await?;
        kubelet_via_connect(&self.bridges[i], &self.cluster, 0).await?;
        let after = self.bridges[i].report().await?;
        let (k0, k1) = (k_dials(&before), k_dials(&after));
        anyhow::ensure!(
            k1 > k0,
            "bridge-{i}: the request did not use the Konnectivity path ({k0} -> {k1} dials)"
        );
        Ok(())
    }
}

fn k_dials(r: &Report) -> u64 {
    dials_ok(r, "node-0").1
}

/// `sshbridge_agent_servers_connected` and `_wanted` from the agent's
/// `/metrics`.
async fn servers(metrics: SocketAddr) -> anyhow::Result<(u64, u64)> {
    let (status, body) = http_get(metrics, "/metrics").await?;
    anyhow::ensure!(status == 200, "agent /metrics answered {status}");
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("{name} missing from the agent's metrics:\n{body}"))
    };
    Ok((
        value("sshbridge_agent_servers_connected ")?,
        value("sshbridge_agent_servers_wanted ")?,
    ))
}

async fn wait_servers(metrics: SocketAddr, want: (u64, u64)) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let got = servers(metrics).await?;
        if got == want {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < UP,
            "the agent holds {got:?} (servers, wanted), expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_agent_behind_a_load_balancer_holds_every_bridge_and_follows_one_that_restarts(
) -> anyhow::Result<()> {
    within(150, async {
        let start = Instant::now();
        let mut ha = Ha::start().await?;
        let ip: IpAddr = [127, 0, 0, 1].into();
        let metrics = SocketAddr::new(ip, net::free_port(ip)?);
        let node = &ha.cluster.nodes[0];
        let (_, k0) = &ha.configs[0];
        let mut spec = ha.cluster.agent_spec(k0, node);
        spec.server = ha.lb.addr.to_string();
        spec.extra_args = vec!["--metrics-listen".into(), metrics.to_string()];
        let mut agent = Agent::start(spec).await?;
        for i in 0..BRIDGES {
            ha.wait_agents(i, 1).await?;
        }
        wait_servers(metrics, (3, 3)).await?;
        for i in 0..BRIDGES {
            ha.request(i).await?;
        }
        observed(&format!(
            "our agent on all {BRIDGES} bridges after {:?} (balancer picks {:?})",
            start.elapsed(),
            (0..BRIDGES).map(|i| ha.lb.picked(i)).collect::<Vec<_>>()
        ));

        // bridge-1 dies: the agent keeps the other two, and while it dials
        // for the missing one (duplicates on 0 and 2), their traffic flows.
        ha.bridges[1].kill().await;
        wait_servers(metrics, (2, 3)).await?;
        let dups = ha.lb.picked(0) + ha.lb.picked(2);
        for _ in 0..5 {
            for i in [0, 2] {
                ha.request(i).await?;
            }
        }
        anyhow::ensure!(
            ha.lb.picked(0) + ha.lb.picked(2) > dups,
            "the agent did not dial again for the lost bridge"
        );
        for i in [0, 2] {
            let r = ha.bridges[i].report().await?;
            let agents = konnectivity_path(&r, "node-0").and_then(|p| p.agents);
            anyhow::ensure!(agents == Some(1), "bridge-{i}: agents {agents:?}");
        }

        // bridge-1 is back on the same port: the agent returns to it.
        let back = Instant::now();
        let (config, k) = ha.configs[1].clone();
        ha.bridges[1] = Bridge::start_with(config, Some(k), None).await?;
        ha.wait_agents(1, 1).await?;
        wait_servers(metrics, (3, 3)).await?;
        ha.request(1).await?;
        observed(&format!(
            "our agent back on the restarted bridge after {:?}",
            back.elapsed()
        ));
        agent.kill().await?;

        // Upstream's proxy-agent through the same balancer.
        if let Some(anp) = anp() {
            for i in 0..BRIDGES {
                ha.bridges[i]
                    .wait_for_report("our agent gone", UP, |r| {
                        konnectivity_path(r, "node-0").is_none_or(|p| p.agents.unwrap_or(0) == 0)
                    })
                    .await?;
            }
            let up = Instant::now();
            let node = &ha.cluster.nodes[0];
            let _upstream = UpstreamAgent::start(&anp, &ha.cluster, node, ha.lb.addr).await?;
            for i in 0..BRIDGES {
                ha.wait_agents(i, 1).await?;
                ha.request(i).await?;
            }
            observed(&format!(
                "upstream proxy-agent on all {BRIDGES} bridges after {:?}",
                up.elapsed()
            ));
        }
        observed(&format!("multiagent test took {:?}", start.elapsed()));
        Ok(())
    })
    .await
}
