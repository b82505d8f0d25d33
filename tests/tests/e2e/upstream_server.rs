//! Interop with upstream Konnectivity, our agent side: `sshbridge agent`
//! serving a node through upstream `proxy-server`, in both of its frontend
//! modes (`grpc` and `http-connect`, each over its unix socket), with
//! clients of ours and upstream's `proxy-test-client`. Runs when `ANP_BIN`
//! is set (see `upstream.rs`).

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use sshbridge_tests::upstream::{self, Counts, Mode, Probe, UpstreamServer};
use sshbridge_tests::{
    kubelet_get, sha256_hex, Agent, AgentSpec, Cluster, Egress, GrpcEgress, Stream,
};

use crate::support::within;
use crate::upstream_common::{anp, observed};
use crate::upstream_scenarios::{
    scenario_close_first, scenario_half_close, scenario_vanish, sha_echo,
};

const UP: Duration = Duration::from_secs(30);

/// A one-node cluster whose node is served by `sshbridge agent` through an
/// upstream `proxy-server`.
struct Setup {
    cluster: Cluster,
    server: UpstreamServer,
    agent: Agent,
}

impl Setup {
    async fn start(anp: &std::path::Path, mode: Mode) -> anyhow::Result<Self> {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let server = UpstreamServer::start(anp, &cluster, mode).await?;
        let node = &cluster.nodes[0];
        let dir = cluster.dir.path().to_path_buf();
        // A certificate that names the node, as for our own server.
        let pair = cluster
            .pki
            .issue_client(&format!("system:node:{}", node.name))?;
        let identity = pair.write_to(&dir, "our-agent-node-0")?;
        let agent = Agent::start(AgentSpec {
            server: server.agent_addr.to_string(),
            ca_cert: cluster.ca_path.clone(),
            identity: Some(identity),
            agent_id: format!("agent-{}", node.name),
            identifiers: format!("host={}&ipv4={}", node.name, node.address),
            token_file: None,
            dir,
            extra_args: Vec::new(),
        })
        .await?;
        server.wait_ready(UP).await?;
        Ok(Setup {
            cluster,
            server,
            agent,
        })
    }

    /// A stream to `target` through the upstream server's frontend.
    async fn connect(&self, target: &str) -> anyhow::Result<Stream> {
        match self.server.mode {
            Mode::HttpConnect => {
                // Upstream's answer is checked byte for byte below; the
                // target may speak first.
                let c = Egress::Uds(self.server.uds.clone())
                    .connect_server_speaks_first(target)
                    .await?;
                anyhow::ensure!(c.status == 200, "CONNECT {target} via proxy-server: {c:?}");
                anyhow::ensure!(
                    c.head == "HTTP/1.1 200 Connection Established\r\n\r\n",
                    "proxy-server's CONNECT answer changed: {:?}",
                    c.head
                );
                Ok(c.stream)
            }
            Mode::Grpc => GrpcEgress::new(&self.server.uds)
                .dial(target)
                .await?
                .map_err(|e| anyhow::anyhow!("gRPC dial of {target} via proxy-server: {e}")),
        }
    }

    /// Like [`Setup::connect`], but in http-connect mode only the CONNECT
    /// request is written: the answer is left on the stream.
    async fn connect_raw(&self, target: &str) -> anyhow::Result<Stream> {
        if self.server.mode == Mode::Grpc {
            return self.connect(target).await;
        }
        let mut s = Egress::Uds(self.server.uds.clone()).open().await?;
        let req = format!("CONNECT {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        tokio::time::timeout(UP, s.write_all(req.as_bytes())).await??;
        Ok(s)
    }

    /// The upstream server, our agent and the node's pod servers.
    fn probes(&self) -> anyhow::Result<Vec<Probe>> {
        let n = &self.cluster.nodes[0];
        let server = self
            .server
            .process
            .pid()
            .ok_or_else(|| anyhow::anyhow!("no server"))?;
        let agent = upstream::pid_of(&format!("--server {} ", self.agent.spec.server))?;
        Ok(vec![
            Probe::process("proxy-server", server),
            Probe::process("sshbridge-agent", agent),
            Probe::server("echo", n.echo.addr()),
            Probe::server("firehose", n.firehose.addr()),
            Probe::server("close-first", n.close_first.addr()),
        ])
    }
}

#[tokio::test]
async fn our_agent_serves_its_node_through_an_upstream_server_in_both_modes() -> anyhow::Result<()>
{
    let Some(anp) = anp() else { return Ok(()) };
    within(240, async {
        for mode in [Mode::HttpConnect, Mode::Grpc] {
            let s = Setup::start(&anp, mode).await?;
            let n = &s.cluster.nodes[0];
            let label = format!("proxy-server --mode={} + sshbridge agent", mode.as_str());
            let mut c = s.connect(&n.echo.addr().to_string()).await?;
            let sha = sha_echo(&mut c, 4 << 20).await?;
            observed(&format!("{label}: 4 MiB echo both ways, sha256 {sha}"));
            let k = s.connect(&n.kubelet_target()).await?;
            let tls = s.cluster.kubelet_client_tls()?;
            let (status, body) = kubelet_get(k, tls, n.address, "/pods").await?;
            assert_eq!(
                (status, body.as_str()),
                (200, "node=node-0 path=/pods\n"),
                "{label}"
            );
            let target = upstream::HttpTarget::start(n.pod_ip, 64 * 1024).await?;
            let run = upstream::test_client(
                &anp,
                mode.as_str(),
                &s.server.uds,
                target.addr(),
                "/via-upstream",
            )
            .await?;
            assert!(
                run.success,
                "{label}: proxy-test-client failed:\n{}",
                run.stderr
            );
            assert!(
                run.stderr.contains(target.body()),
                "{label}: body not intact"
            );
            observed(&format!(
                "{label}: kubelet GET 200; proxy-test-client --mode={} 200, body sha256 {}",
                mode.as_str(),
                sha256_hex(target.body().as_bytes())
            ));
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn half_close_vanish_and_close_first_with_an_upstream_server() -> anyhow::Result<()> {
    let Some(anp) = anp() else { return Ok(()) };
    within(600, async {
        let mut failed = Vec::new();
        for mode in [Mode::HttpConnect, Mode::Grpc] {
            let s = Setup::start(&anp, mode).await?;
            let n = &s.cluster.nodes[0];
            let base = Counts::take(&s.probes()?);
            let label = format!("proxy-server --mode={} + sshbridge agent", mode.as_str());
            // Each scenario runs even when one before it failed, so the
            // output records every combination. Upstream's http-connect
            // frontend may write a target's first bytes before its 200
            // head: for targets that speak first, read it as raw bytes.
            let echo = s.connect(&n.echo.addr().to_string()).await?;
            if let Err(e) = scenario_half_close(&label, echo, &base).await {
                failed.push(format!("{e:#}"));
            }
            let hose = s.connect_raw(&n.firehose.addr().to_string()).await?;
            let raw = mode == Mode::HttpConnect;
            if let Err(e) = scenario_vanish(&label, hose, &base, &n.firehose, raw).await {
                failed.push(format!("{e:#}"));
            }
            let first = s.connect_raw(&n.close_first.addr().to_string()).await?;
            if let Err(e) = scenario_close_first(&label, first, &base).await {
                failed.push(format!("{e:#}"));
            }
        }
        anyhow::ensure!(
            failed.is_empty(),
            "{} scenario(s) failed:\n{}",
            failed.len(),
            failed.join("\n")
        );
        Ok(())
    })
    .await
}
