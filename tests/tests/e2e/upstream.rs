//! Interop with upstream Konnectivity (apiserver-network-proxy v0.33.1),
//! our server side: upstream `proxy-agent` processes serving a node through
//! sshbridge's agent server, and upstream `proxy-test-client` using
//! sshbridge's frontends. Runs when `ANP_BIN` names the directory of the
//! upstream binaries; otherwise every test prints
//! `skipped: ANP_BIN not set` and passes (docs/upstream.md).
//!
//! Each test prints `observed:` lines: what the upstream peer did, for
//! docs/upstream.md and the closing note.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sshbridge::report::PathState;
use sshbridge_config::Route;
use sshbridge_tests::upstream::{self, Counts, Probe, UpstreamAgent};
use sshbridge_tests::{konnectivity_state, sha256_hex, Bridge, Cluster, GrpcEgress, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{kubelet_via_connect, within};
use crate::upstream_common::{anp, observed};
use crate::upstream_scenarios::{
    scenario_close_first, scenario_half_close, scenario_vanish, sha_echo,
};

/// Bound for a node's Konnectivity path to come up (agent connect + one
/// probe) on a busy machine.
const UP: Duration = Duration::from_secs(30);
/// A one-node cluster whose bridge serves node-0 over Konnectivity through
/// an upstream agent.
struct Setup {
    cluster: Cluster,
    bridge: Bridge,
    agent: UpstreamAgent,
    anp: PathBuf,
}

impl Setup {
    async fn start(anp: PathBuf) -> anyhow::Result<Self> {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let config = cluster.bridge_config()?;
        let mut k = cluster.konnectivity_config(&config)?;
        k.route(&cluster.nodes[0].name, Route::Konnectivity);
        let bridge = Bridge::start_with(config, Some(k.clone()), None).await?;
        let agent = UpstreamAgent::for_bridge(&anp, &cluster, &k, &cluster.nodes[0]).await?;
        bridge.wait_for_konnectivity("node-0", UP).await?;
        Ok(Setup {
            cluster,
            bridge,
            agent,
            anp,
        })
    }

    /// The bridge, the upstream agent and the node's pod servers.
    fn probes(&self) -> anyhow::Result<Vec<Probe>> {
        let n = &self.cluster.nodes[0];
        let bridge = upstream::pid_of(&self.bridge.config.path().display().to_string())?;
        let agent = self
            .agent
            .process
            .pid()
            .ok_or_else(|| anyhow::anyhow!("agent not running"))?;
        Ok(vec![
            Probe::process("bridge", bridge),
            Probe::process("proxy-agent", agent),
            Probe::server("echo", n.echo.addr()),
            Probe::server("firehose", n.firehose.addr()),
            Probe::server("close-first", n.close_first.addr()),
        ])
    }

    async fn connect(&self, target: &str) -> anyhow::Result<Stream> {
        let c = self.bridge.egress().connect(target).await?;
        anyhow::ensure!(c.status == 200, "CONNECT {target}: {c:?}");
        Ok(c.stream)
    }

    /// [`Setup::connect`] to a target that speaks first.
    async fn connect_first(&self, target: &str) -> anyhow::Result<Stream> {
        let c = self
            .bridge
            .egress()
            .connect_server_speaks_first(target)
            .await?;
        anyhow::ensure!(c.status == 200, "CONNECT {target}: {c:?}");
        Ok(c.stream)
    }
}

#[tokio::test]
async fn upstream_agent_serves_its_node_through_our_server() -> anyhow::Result<()> {
    let Some(anp) = anp() else { return Ok(()) };
    within(150, async {
        let s = Setup::start(anp).await?;
        let n = &s.cluster.nodes[0];
        // The agent's client certificate names the node; its identifiers
        // agree with the inventory.
        kubelet_via_connect(&s.bridge, &s.cluster, 0).await?;
        let mut c = s.connect(&n.echo.addr().to_string()).await?;
        let sha = sha_echo(&mut c, 4 << 20).await?;
        observed(&format!(
            "CONNECT -> our server -> proxy-agent -> echo: 4 MiB both ways, sha256 {sha}"
        ));
        let grpc = GrpcEgress::new(s.bridge.grpc_uds().expect("grpc_uds"));
        let mut g = grpc
            .dial(&n.echo.addr().to_string())
            .await?
            .map_err(|e| anyhow::anyhow!("gRPC dial: {e}"))?;
        let sha = sha_echo(&mut g, 1 << 20).await?;
        observed(&format!(
            "gRPC (ours) -> our server -> proxy-agent -> echo: 1 MiB both ways, sha256 {sha}"
        ));
        let report = s.bridge.report().await?;
        assert_eq!(konnectivity_state(&report, "node-0"), PathState::Up);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn upstream_test_client_http_connect_through_our_egress() -> anyhow::Result<()> {
    let Some(anp) = anp() else { return Ok(()) };
    within(150, async {
        let s = Setup::start(anp).await?;
        let target = upstream::HttpTarget::start(s.cluster.nodes[0].pod_ip, 64 * 1024).await?;
        let run = upstream::test_client(&s.anp, "http-connect", &s.bridge.config.uds, target.addr(), "/upstream").await?;
        assert!(run.success, "proxy-test-client http-connect failed:\n{}", run.stderr);
        assert!(
            run.stderr.contains(target.body()),
            "the 64 KiB body did not arrive intact:\n{}",
            &run.stderr[..run.stderr.len().min(2000)]
        );
        let heads = target.heads();
        assert!(
            heads.len() == 1 && heads[0].starts_with("GET /upstream HTTP/1.1\r\n"),
            "the target got {heads:?}"
        );
        observed(&format!(
            "proxy-test-client --mode=http-connect -> our egress uds -> proxy-agent: 200, body sha256 {}",
            sha256_hex(target.body().as_bytes())
        ));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn upstream_test_client_grpc_through_our_grpc_frontend() -> anyhow::Result<()> {
    let Some(anp) = anp() else { return Ok(()) };
    within(150, async {
        let s = Setup::start(anp).await?;
        let target = upstream::HttpTarget::start(s.cluster.nodes[0].pod_ip, 64 * 1024).await?;
        let uds = s.bridge.grpc_uds().expect("grpc_uds").to_path_buf();
        let run = upstream::test_client(&s.anp, "grpc", &uds, target.addr(), "/grpc").await?;
        assert!(
            run.success,
            "proxy-test-client grpc (socket path as :authority) failed:\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains(target.body()),
            "the body did not arrive intact"
        );
        let heads = target.heads();
        assert!(
            heads.len() == 1 && heads[0].starts_with("GET /grpc HTTP/1.1\r\n"),
            "the target got {heads:?}"
        );
        observed(&format!(
            "proxy-test-client --mode=grpc -> our grpc_uds -> proxy-agent: 200, body sha256 {}",
            sha256_hex(target.body().as_bytes())
        ));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn half_close_with_an_upstream_agent_leaves_nothing_open() -> anyhow::Result<()> {
    let Some(anp) = anp() else { return Ok(()) };
    within(200, async {
        let s = Setup::start(anp).await?;
        let n = &s.cluster.nodes[0];
        let base = Counts::take(&s.probes()?);
        let label = "our server + proxy-agent, CONNECT";
        scenario_half_close(label, s.connect(&n.echo.addr().to_string()).await?, &base).await
    })
    .await
}

#[tokio::test]
async fn vanishing_client_and_closing_target_with_an_upstream_agent() -> anyhow::Result<()> {
    let Some(anp) = anp() else { return Ok(()) };
    within(200, async {
        let s = Setup::start(anp).await?;
        let n = &s.cluster.nodes[0];
        let base = Counts::take(&s.probes()?);
        let label = "our server + proxy-agent, CONNECT";
        scenario_vanish(
            label,
            s.connect_first(&n.firehose.addr().to_string()).await?,
            &base,
            &n.firehose,
            false,
        )
        .await?;
        scenario_close_first(
            label,
            s.connect_first(&n.close_first.addr().to_string()).await?,
            &base,
        )
        .await
    })
    .await
}

#[tokio::test]
async fn a_restarted_upstream_agent_serves_its_node_again() -> anyhow::Result<()> {
    let Some(anp) = anp() else { return Ok(()) };
    within(150, async {
        let mut s = Setup::start(anp).await?;
        let echo = s.cluster.nodes[0].echo.addr().to_string();
        let p = &mut s.agent.process;
        let start = Instant::now();
        p.signal(Signal::SIGTERM)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let drained = p.is_running();
        p.signal(Signal::SIGTERM)?;
        let status = p.wait_exit(Duration::from_secs(15)).await?;
        observed(&format!(
            "proxy-agent: first SIGTERM drains (still running 300 ms later: {drained}), second exits: {status} after {:.1?}",
            start.elapsed()
        ));
        // Without its agent, the node's dials are refused.
        s.bridge.wait_for_report("node-0 konnectivity not up", UP, |r| {
            konnectivity_state(r, "node-0") != PathState::Up
        })
        .await?;
        let refused = s.bridge.egress().connect(&echo).await?;
        assert_eq!(refused.status, 503, "{refused:?}");
        let restart = Instant::now();
        s.agent.process.respawn()?;
        s.bridge.wait_for_konnectivity("node-0", UP).await?;
        let back = restart.elapsed();
        let mut c = s.connect(&echo).await?;
        let sha = sha_echo(&mut c, 1 << 20).await?;
        observed(&format!(
            "proxy-agent restarted: node-0 served again {back:.1?} after the start; 1 MiB echo sha256 {sha}"
        ));
        assert!(back < UP, "{back:?}");
        Ok(())
    })
    .await
}

/// sshbridge's default `stall_timeout` on the Konnectivity path: how long
/// a full connection may hold up its agent's stream before it is cut.
const STALL: Duration = Duration::from_secs(30);

#[tokio::test]
async fn stalled_readers_on_an_upstream_agent_block_its_stream_until_stall_timeout(
) -> anyhow::Result<()> {
    // Issue 17's compatibility mode: an upstream agent knows no
    // per-connection windows, so a full connection holds up the agent's
    // whole stream (echo included) until `stall_timeout` cuts it; then the
    // stream flows again. Three firehoses whose clients never read, one
    // echo pinged every 200 ms.
    let Some(anp) = anp() else { return Ok(()) };
    within(300, async {
        let s = Setup::start(anp).await?;
        let n = &s.cluster.nodes[0];
        let mut echo = s.connect(&n.echo.addr().to_string()).await?;
        sha_echo(&mut echo, 64 * 1024).await?;
        // Dialed at once: a dial answered after the first firehose filled
        // its buffer waits behind it like any other packet.
        let hose = n.firehose.addr().to_string();
        let bridge_egress = s.bridge.egress();
        let dial = || bridge_egress.connect_server_speaks_first(&hose);
        let (a, b, c) = tokio::join!(dial(), dial(), dial());
        let mut hoses = Vec::new();
        let mut refused = Vec::new();
        for c in [a, b, c] {
            let c = c?;
            if c.status == 200 {
                hoses.push(c.stream);
            } else {
                refused.push(format!("{} {}", c.status, c.body.trim()));
            }
        }
        observed(&format!(
            "3 firehose dials at once on one proxy-agent: {} answered 200, others: {refused:?}",
            hoses.len()
        ));
        anyhow::ensure!(!hoses.is_empty(), "no firehose dial succeeded: {refused:?}");
        let start = Instant::now();
        let (mut worst, mut slow, mut pings) = (Duration::ZERO, 0u32, 0u32);
        let mut cut_at = None;
        let mut report_states = std::collections::BTreeSet::new();
        // Until all three firehoses are cut (their target side closed) and
        // a ping after that came back fast.
        let limit = STALL * 3 + Duration::from_secs(40);
        loop {
            let sent = Instant::now();
            let msg = format!("ping {pings:08}");
            let rtt = tokio::time::timeout(limit, async {
                echo.write_all(msg.as_bytes()).await?;
                let mut back = vec![0u8; msg.len()];
                echo.read_exact(&mut back).await?;
                anyhow::ensure!(back == msg.as_bytes(), "echo came back different");
                Ok(sent.elapsed())
            })
            .await
            .map_err(|_| anyhow::anyhow!("a ping got no answer within {limit:?}"))??;
            pings += 1;
            worst = worst.max(rtt);
            if rtt > Duration::from_secs(1) {
                slow += 1;
            }
            if let Ok(r) = s.bridge.report().await {
                report_states.insert(format!("{:?}", konnectivity_state(&r, "node-0")));
            }
            let open = upstream::tcp_conns(n.firehose.addr());
            if open == 0 && cut_at.is_none() {
                cut_at = Some(start.elapsed());
            }
            if cut_at.is_some() && rtt < Duration::from_millis(500) {
                break;
            }
            anyhow::ensure!(
                start.elapsed() < limit,
                "the firehoses were not all cut within {limit:?} ({open} still open)"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let cut = cut_at.expect("set before the loop ends");
        observed(&format!(
            "3 unread firehoses + echo on one proxy-agent: {pings} pings, {slow} took over 1 s, \
             worst {worst:.1?}; all firehoses cut {cut:.1?} after they started; \
             node-0 konnectivity states seen: {report_states:?}"
        ));
        let log = s.bridge.log();
        let cuts = log.matches("its reader took no bytes").count();
        observed(&format!("bridge log: {cuts} connection(s) closed as not reading"));
        assert!(
            worst >= Duration::from_secs(2),
            "no head-of-line blocking seen (worst ping {worst:?}): has the compatibility mode changed?"
        );
        assert!(
            cut >= STALL - Duration::from_secs(2) && cut <= limit,
            "the stalled connections were cut after {cut:?}, expected after stall_timeout ({STALL:?})"
        );
        assert!(cuts >= 1, "the bridge did not say why it cut the firehoses");
        drop(hoses);
        Ok(())
    })
    .await
}
