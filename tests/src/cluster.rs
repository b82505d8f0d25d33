//! A simulated cluster: N nodes, each a real sshd plus a TLS kubelet
//! stand-in on the node's own 127.x address and pod servers on a pod
//! CIDR of its own, and the files a bridge needs to reach them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use sshbridge_sim::kubelet::Kubelet;
use sshbridge_sim::pki::Pki;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bridge::{BridgeConfig, NodeEntry, TcpEgress};
use crate::hostkeys::{self, ClientKey, HostCa, KnownHostsStyle};
use crate::net;
use crate::pods::{Behavior, PodServer};
use crate::sshd::{SshdNode, SshdSpec};
use crate::usercert::{UserCa, UserCaTrust};

/// One simulated node.
pub struct Node {
    /// Node name.
    pub name: String,
    /// Node IP (kubelet, and sshd's listen address).
    pub address: IpAddr,
    /// The node's sshd.
    pub sshd: SshdNode,
    /// The node's kubelet stand-in.
    pub kubelet: Kubelet,
    /// The node's pod CIDR (`127.a.b.0/24`).
    pub pod_cidr: String,
    /// The pod address whose servers are below; sshd permits dials to it.
    pub pod_ip: IpAddr,
    /// An address inside the pod CIDR that sshd's `PermitOpen` refuses.
    pub denied_pod_ip: IpAddr,
    /// Echo server on `pod_ip`.
    pub echo: PodServer,
    /// SHA-256 server on `pod_ip`.
    pub hash: PodServer,
    /// Endless writer on `pod_ip`.
    pub firehose: PodServer,
    /// Server that closes its write side first, on `pod_ip`.
    pub close_first: PodServer,
}

impl Node {
    /// `address:kubelet_port`, a CONNECT target.
    pub fn kubelet_target(&self) -> String {
        self.kubelet.local_addr().to_string()
    }

    /// `name:kubelet_port`, a CONNECT target by node name.
    pub fn kubelet_target_by_name(&self) -> String {
        format!("{}:{}", self.name, self.kubelet.local_addr().port())
    }

    /// This node's `[[node]]` entry.
    pub fn entry(&self) -> NodeEntry {
        NodeEntry {
            name: self.name.clone(),
            address: self.address,
            ssh_address: self.sshd.addr(),
            pod_cidrs: vec![self.pod_cidr.clone()],
        }
    }
}

/// Builds a [`Cluster`].
#[derive(Debug, Default)]
pub struct ClusterBuilder {
    nodes: usize,
    host_ca: bool,
    foreign_kubelet_ca: Option<usize>,
    user_cas: usize,
    first_user_ca_only: Option<usize>,
}

impl ClusterBuilder {
    /// Number of nodes (named `node-0`, `node-1`, ...).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Nodes present host certificates signed by a host CA.
    pub fn host_ca(mut self) -> Self {
        self.host_ca = true;
        self
    }

    /// Node number `index` gets a kubelet serving certificate from another
    /// CA than [`Cluster::ca_path`] (the one `[health] kubelet_ca` names),
    /// as after a botched certificate rotation.
    pub fn foreign_kubelet_ca(mut self, index: usize) -> Self {
        self.foreign_kubelet_ca = Some(index);
        self
    }

    /// `n` user CAs ([`Cluster::user_cas`]); every node then trusts
    /// certificates from all of them for [`crate::usercert::PRINCIPAL`] and has
    /// no authorized_keys.
    pub fn user_cas(mut self, n: usize) -> Self {
        self.user_cas = n;
        self
    }

    /// Node number `index` trusts only the first user CA.
    pub fn first_user_ca_only(mut self, index: usize) -> Self {
        self.first_user_ca_only = Some(index);
        self
    }

    /// Starts everything.
    pub async fn build(self) -> anyhow::Result<Cluster> {
        crate::init_tracing();
        let dir = tempfile::Builder::new().prefix("sshbridge-e2e").tempdir()?;
        let pki = Pki::new("sshbridge-e2e-ca")?;
        let ca_path = pki.write_ca(dir.path())?;
        let client_key = ClientKey::generate(dir.path(), "id_ed25519")?;
        let host_ca = if self.host_ca {
            Some(HostCa::generate(dir.path())?)
        } else {
            None
        };
        let user_cas = (0..self.user_cas)
            .map(|i| UserCa::generate(dir.path(), &format!("user_ca_{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut cluster = Cluster {
            user_cas,
            first_user_ca_only: self.first_user_ca_only,
            kubelet_port: 0,
            pki,
            ca_path,
            client_key,
            host_ca,
            foreign_kubelet_ca: self.foreign_kubelet_ca,
            nodes: Vec::new(),
            shutdown: CancellationToken::new(),
            dir,
        };
        for _ in 0..self.nodes {
            cluster.add_node().await?;
        }
        Ok(cluster)
    }
}

/// A running simulated cluster. Dropping it stops every server in it.
pub struct Cluster {
    /// Holds every file; removed on drop.
    pub dir: tempfile::TempDir,
    /// The cluster CA (kubelet serving certs, egress TLS).
    pub pki: Pki,
    /// `ca.crt` of [`Cluster::pki`], what `[health] kubelet_ca` names.
    pub ca_path: PathBuf,
    /// The bridge's SSH identity, authorized on every node.
    pub client_key: ClientKey,
    /// The host CA, when built with [`ClusterBuilder::host_ca`].
    pub host_ca: Option<HostCa>,
    /// The nodes, in creation order.
    pub nodes: Vec<Node>,
    /// The kubelet port every node uses (`[health] kubelet_port`).
    pub kubelet_port: u16,
    /// User CAs the nodes trust, when built with
    /// [`ClusterBuilder::user_cas`].
    pub user_cas: Vec<UserCa>,
    first_user_ca_only: Option<usize>,
    foreign_kubelet_ca: Option<usize>,
    pub(crate) shutdown: CancellationToken,
}

impl Cluster {
    /// A builder.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("no such node")
    }

    /// Starts one more node (`node-N`) and returns it. The bridge does not
    /// know it until its config names it.
    pub async fn add_node(&mut self) -> anyhow::Result<&Node> {
        let name = format!("node-{}", self.nodes.len());
        let node_dir = self.dir.path().join(&name);
        std::fs::create_dir_all(&node_dir)?;
        let address = net::host(net::block(), 1);
        let pod_block = net::block();
        let pod_ip = net::host(pod_block, 10);
        let listener = self.bind_kubelet(address).await?;
        let tls = if self.foreign_kubelet_ca == Some(self.nodes.len()) {
            let foreign = Pki::new("some-other-ca")?;
            foreign.server_config(&foreign.issue_server(&[address], &[&name])?)?
        } else {
            self.pki
                .server_config(&self.pki.issue_server(&[address], &[&name])?)?
        };
        let kubelet = Kubelet::start(listener, name.clone(), tls, self.shutdown.child_token())?;
        let spec = SshdSpec {
            name: name.clone(),
            address,
            permit_open: vec![format!("{address}:*"), format!("{pod_ip}:*")],
            authorized_keys: vec![self.client_key.public.clone()],
        };
        let sshd = if self.user_cas.is_empty() {
            SshdNode::start(spec, &node_dir, self.host_ca.as_ref()).await?
        } else {
            let cas: Vec<&UserCa> = if self.first_user_ca_only == Some(self.nodes.len()) {
                vec![&self.user_cas[0]]
            } else {
                self.user_cas.iter().collect()
            };
            let trust = UserCaTrust::of(&cas);
            SshdNode::start_trusting(spec, &node_dir, self.host_ca.as_ref(), &trust).await?
        };
        let pod = |b| PodServer::start(pod_ip, b, self.shutdown.child_token());
        let node = Node {
            echo: pod(Behavior::Echo).await?,
            hash: pod(Behavior::Hash).await?,
            firehose: pod(Behavior::Firehose).await?,
            close_first: pod(Behavior::CloseFirst).await?,
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

    /// Binds the kubelet port on `address`; the first node picks it.
    async fn bind_kubelet(&mut self, address: IpAddr) -> anyhow::Result<TcpListener> {
        let l = TcpListener::bind(SocketAddr::new(address, self.kubelet_port))
            .await
            .with_context(|| format!("binding kubelet {address}:{}", self.kubelet_port))?;
        self.kubelet_port = l.local_addr()?.port();
        Ok(l)
    }

    /// Writes a known_hosts file naming `nodes` (all nodes when empty is
    /// not wanted, pass them explicitly) in `style`; returns its path.
    pub fn write_known_hosts(
        &self,
        file: &str,
        nodes: &[&Node],
        style: KnownHostsStyle,
    ) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(file);
        let entries: Vec<(SocketAddr, String)> = nodes
            .iter()
            .map(|n| (n.sshd.addr(), n.sshd.host_key().to_string()))
            .collect();
        hostkeys::write_known_hosts(&path, &entries, style, self.host_ca.as_ref())?;
        Ok(path)
    }

    /// A bridge config for every node, plain known_hosts, short timeouts
    /// suited to tests.
    pub fn bridge_config(&self) -> anyhow::Result<BridgeConfig> {
        let all: Vec<&Node> = self.nodes.iter().collect();
        let style = if self.host_ca.is_some() {
            KnownHostsStyle::CertAuthority
        } else {
            KnownHostsStyle::Plain
        };
        let known_hosts = self.write_known_hosts("known_hosts", &all, style)?;
        let bridge_dir = self.dir.path().join("bridge");
        std::fs::create_dir_all(&bridge_dir)?;
        Ok(BridgeConfig {
            uds: bridge_dir.join("egress.sock"),
            dir: bridge_dir,
            tcp: None,
            admin_tcp: None,
            dial_timeout: "3s".into(),
            user: current_user()?,
            identity: self.client_key.private.clone(),
            known_hosts,
            connect_timeout: "3s".into(),
            keepalive_interval: "1s".into(),
            keepalive_max: 3,
            backoff: ("100ms".into(), "500ms".into()),
            max_stream_buffer: "4MiB".into(),
            extra_ssh_lines: Vec::new(),
            health_interval: "1s".into(),
            kubelet_port: self.kubelet_port,
            kubelet_ca: Some(self.ca_path.clone()),
            down_after: 2,
            up_after: 1,
            extra_bridge_lines: Vec::new(),
            migration: None,
            nodes: self.nodes.iter().map(Node::entry).collect(),
        })
    }

    /// Adds an mTLS TCP egress on a free 127.0.0.1 port to `config`.
    pub fn with_tcp_egress(&self, mut config: BridgeConfig) -> anyhow::Result<BridgeConfig> {
        let ip: IpAddr = [127, 0, 0, 1].into();
        let server = self.pki.issue_server(&[ip], &["sshbridge"])?;
        let (cert, key) = server.write_to(&config.dir, "egress")?;
        let client = self.pki.issue_client("kube-apiserver")?;
        config.tcp = Some(TcpEgress {
            listen: SocketAddr::new(ip, net::free_port(ip)?),
            cert,
            key,
            client_ca: self.ca_path.clone(),
            client: self.pki.client_config(Some(&client))?,
        });
        Ok(config)
    }

    /// Client TLS config that verifies kubelets (trusts the cluster CA).
    pub fn kubelet_client_tls(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        Ok(self.pki.client_config(None)?)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The user sshd runs as and the bridge logs in as.
pub fn current_user() -> anyhow::Result<String> {
    let uid = nix::unistd::geteuid();
    let user = nix::unistd::User::from_uid(uid)?.context("current uid has no passwd entry")?;
    Ok(user.name)
}
