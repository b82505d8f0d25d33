//! The Konnectivity side of the kit: a bridge config with the agent server
//! (server certificate for 127.0.0.1, agents authenticated by the cluster
//! CA), the gRPC egress socket, and readiness of a node's Konnectivity path
//! as `/report` shows it.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use sshbridge::report::{PathReport, PathState, Report};

use crate::agent::{Agent, AgentSpec};
use crate::bridge::{Bridge, BridgeConfig, KonnectivityConfig};
use crate::cluster::{Cluster, Node};
use crate::net;

impl Cluster {
    /// Konnectivity for a bridge whose files live in `config.dir`: the
    /// agent server on a free 127.0.0.1 port with a certificate for that
    /// IP, `client_ca` set and identity proven (each agent presents its
    /// node's certificate, CN `system:node:NAME`), a gRPC
    /// egress socket, every node on `ssh`, and short migration timings.
    pub fn konnectivity_config(&self, config: &BridgeConfig) -> anyhow::Result<KonnectivityConfig> {
        let ip: IpAddr = [127, 0, 0, 1].into();
        let server = self.pki.issue_server(&[ip], &["sshbridge-konnectivity"])?;
        let (cert, key) = server.write_to(&config.dir, "konnectivity")?;
        let client = self.pki.issue_client("konnectivity-agent")?;
        let agent_identity = client.write_to(&config.dir, "agent")?;
        let mut agent_identities = std::collections::BTreeMap::new();
        for node in &self.nodes {
            let files = self.issue_agent_identity(&config.dir, &node.name)?;
            agent_identities.insert(node.name.clone(), files);
        }
        Ok(KonnectivityConfig {
            agent_listen: SocketAddr::new(ip, net::free_port(ip)?),
            cert,
            key,
            client_ca: Some(self.ca_path.clone()),
            grpc_uds: Some(config.dir.join("konnectivity.sock")),
            routes: Default::default(),
            migration: Default::default(),
            agent_ca: self.ca_path.clone(),
            agent_identity,
            agent_identities,
            identity: None,
            agent_tls: self.pki.client_config(Some(&client))?,
            extra: String::new(),
        })
    }

    /// Writes node `name`'s agent certificate (CN `system:node:NAME`, as
    /// the kubelet's client certificate) into `dir`; returns (cert, key).
    pub fn issue_agent_identity(
        &self,
        dir: &Path,
        name: &str,
    ) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
        let pair = self.pki.issue_node_client(name)?;
        Ok(pair.write_to(dir, &format!("agent-{name}"))?)
    }

    /// Starts an agent for `node` against the bridge configured with `k`
    /// (logs in the cluster's directory). Not yet connected on return.
    pub async fn start_agent(&self, k: &KonnectivityConfig, node: &Node) -> anyhow::Result<Agent> {
        Agent::start(self.agent_spec(k, node)).await
    }

    /// The flags of an agent for `node`, presenting `node`'s own
    /// certificate (issued now if `k` predates the node).
    pub fn agent_spec(&self, k: &KonnectivityConfig, node: &Node) -> AgentSpec {
        let mut spec =
            AgentSpec::for_node(k, &node.name, node.address, self.dir.path().to_path_buf());
        if !k.agent_identities.contains_key(&node.name) {
            let files = self
                .issue_agent_identity(self.dir.path(), &node.name)
                .expect("writing an agent certificate into the cluster's temp dir");
            spec.identity = Some(files);
        }
        spec
    }
}

/// The Konnectivity path of `node` in `report`, if the node has one.
pub fn konnectivity_path<'a>(report: &'a Report, node: &str) -> Option<&'a PathReport> {
    report
        .nodes
        .iter()
        .find(|n| n.name == node)
        .and_then(|n| n.paths.konnectivity.as_ref())
}

/// The state of `node`'s Konnectivity path (`Unknown` without one).
pub fn konnectivity_state(report: &Report, node: &str) -> PathState {
    konnectivity_path(report, node).map_or(PathState::Unknown, |p| p.state)
}

/// Successful dials on each path of `node`: (ssh, konnectivity).
pub fn dials_ok(report: &Report, node: &str) -> (u64, u64) {
    let Some(n) = report.nodes.iter().find(|n| n.name == node) else {
        return (0, 0);
    };
    let k = n.paths.konnectivity.as_ref().map_or(0, |p| p.dials.ok);
    (n.paths.ssh.dials.ok, k)
}

impl Bridge {
    /// Polls `/report` until `node`'s Konnectivity path is `up`: an agent is
    /// connected and a probe through it reached the kubelet.
    pub async fn wait_for_konnectivity(&self, node: &str, within: Duration) -> anyhow::Result<()> {
        let what = format!("{node}'s konnectivity path up");
        self.wait_for_report(&what, within, |r| {
            konnectivity_state(r, node) == PathState::Up
        })
        .await
        .map(drop)
    }

    /// The gRPC egress socket (`[egress] grpc_uds`), if configured.
    pub fn grpc_uds(&self) -> Option<&Path> {
        self.konnectivity.as_ref()?.grpc_uds.as_deref()
    }
}
