//! Nodes of a [`Cluster`] placed in lab namespaces: sshd (port 22 of the
//! node's own namespace), the kubelet stand-in and the pod servers all
//! listen inside it, so a fault on the node's link cuts all of them off
//! from the bridge at once while they keep talking to each other.

use std::net::{IpAddr, SocketAddr};

use sshbridge_sim::kubelet::Kubelet;

use super::{Lab, NodeNs};
use crate::agent::Agent;
use crate::bridge::{BridgeConfig, KonnectivityConfig};
use crate::cluster::{Cluster, Node};
use crate::net;
use crate::pods::{Behavior, PodServer};
use crate::sshd::{SshdNode, SshdSpec};

/// sshd's port inside a node's namespace.
pub const SSH_PORT: u16 = 22;
/// The kubelet port in every namespace (each has the port to itself).
pub const KUBELET_PORT: u16 = 10250;

impl Cluster {
    /// A cluster with `n` nodes, each in a namespace of `lab`.
    pub async fn in_netns(lab: &mut Lab, n: usize) -> anyhow::Result<Cluster> {
        let mut cluster = Cluster::builder().nodes(0).build().await?;
        for _ in 0..n {
            cluster.add_netns_node(lab).await?;
        }
        Ok(cluster)
    }

    /// Starts one more node (`node-N`) in a fresh namespace of `lab`.
    pub async fn add_netns_node(&mut self, lab: &mut Lab) -> anyhow::Result<&Node> {
        let ns = lab.add_namespace()?;
        let name = format!("node-{}", self.nodes.len());
        let node_dir = self.dir.path().join(&name);
        std::fs::create_dir_all(&node_dir)?;
        let address = IpAddr::V4(ns.node_ip);
        // Pods get a loopback block of their own inside the namespace.
        let pod_block = net::block();
        let pod_ip = net::host(pod_block, 10);
        if self.kubelet_port == 0 {
            self.kubelet_port = KUBELET_PORT;
        }
        let listener = ns.bind(SocketAddr::new(address, self.kubelet_port))?;
        let tls = self
            .pki
            .server_config(&self.pki.issue_server(&[address], &[&name])?)?;
        let kubelet = Kubelet::start(listener, name.clone(), tls, self.shutdown.child_token())?;
        let spec = SshdSpec {
            name: name.clone(),
            address,
            permit_open: vec![format!("{address}:*"), format!("{pod_ip}:*")],
            authorized_keys: vec![self.client_key.public.clone()],
        };
        let sshd =
            SshdNode::start_in_netns(spec, &node_dir, self.host_ca.as_ref(), &ns.name, SSH_PORT)
                .await?;
        let pod = |b| -> anyhow::Result<PodServer> {
            let l = ns.bind(SocketAddr::new(pod_ip, 0))?;
            PodServer::serve_on(l, b, self.shutdown.child_token())
        };
        let node = Node {
            echo: pod(Behavior::Echo)?,
            hash: pod(Behavior::Hash)?,
            firehose: pod(Behavior::Firehose)?,
            close_first: pod(Behavior::CloseFirst)?,
            name,
            address,
            sshd,
            kubelet,
            pod_cidr: format!("{}/24", net::host(pod_block, 0)),
            pod_ip,
            denied_pod_ip: net::host(pod_block, 20),
        };
        self.nodes.push(node);
        Ok(self.nodes.last().expect("just pushed"))
    }

    /// Konnectivity for a bridge in the root namespace whose agents run in
    /// node namespaces: as [`Cluster::konnectivity_config`], with the agent
    /// server on `via`'s root-side address (which every namespace routes
    /// to) and a certificate for that address.
    pub fn netns_konnectivity_config(
        &self,
        config: &BridgeConfig,
        via: &NodeNs,
    ) -> anyhow::Result<KonnectivityConfig> {
        let mut k = self.konnectivity_config(config)?;
        let ip = IpAddr::V4(via.root_ip);
        let server = self.pki.issue_server(&[ip], &["sshbridge-konnectivity"])?;
        let (cert, key) = server.write_to(&config.dir, "konnectivity-netlab")?;
        k.agent_listen = SocketAddr::new(ip, net::free_port(ip)?);
        k.cert = cert;
        k.key = key;
        Ok(k)
    }

    /// Starts `node`'s agent inside its namespace.
    pub async fn start_netns_agent(
        &self,
        k: &KonnectivityConfig,
        node: &Node,
        ns: &NodeNs,
    ) -> anyhow::Result<Agent> {
        Agent::start_in_netns(self.agent_spec(k, node), &ns.name).await
    }
}
