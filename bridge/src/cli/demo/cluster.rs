//! The simulated cluster of `sshbridge demo`: per node an in-process SSH
//! server, a TLS kubelet stand-in and an echo "pod"; the PKI and files the
//! bridge and the agents need; the bridge's config.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sshbridge::agent::{Agent, AgentConfig, AgentHandle};
use sshbridge::daemon::Daemon;
use sshbridge::ssh::TunnelState;
use sshbridge_sim::{keys, kubelet::Kubelet, pki::Pki, sshd::SimSshd, sshd::SimSshdConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::traffic::echo_server;

/// One simulated node.
pub(super) struct SimNode {
    pub(super) name: String,
    pub(super) address: Ipv4Addr,
    pub(super) sshd: SimSshd,
    pub(super) host_key: sshbridge_sim::keys::PublicKey,
    pub(super) kubelet: Kubelet,
    pub(super) pod: SocketAddr,
}

/// Files of the Konnectivity side: the agent server's certificate and the
/// agents' client certificates, all from the demo CA.
pub(super) struct AgentPki {
    pub(super) ca: PathBuf,
    pub(super) server_cert: PathBuf,
    pub(super) server_key: PathBuf,
    pub(super) listen: SocketAddr,
}

impl AgentPki {
    pub(super) async fn new(pki: &Pki, ca: &Path, dir: &Path) -> anyhow::Result<AgentPki> {
        let pair = pki.issue_server(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], &["localhost"])?;
        let (server_cert, server_key) = pair.write_to(dir, "agent-server")?;
        // A free port for the agent server; the bridge binds it right after.
        let listen = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await?
            .local_addr()?;
        Ok(AgentPki {
            ca: ca.to_path_buf(),
            server_cert,
            server_key,
            listen,
        })
    }
}

/// Starts one in-process Konnectivity agent for `node`, with its own client
/// certificate (CN `system:node:NAME`, the kubelet's form, which proves to
/// the bridge which node it serves), identified by the node's name and
/// address.
pub(super) fn start_agent(
    node: &SimNode,
    pki: &Pki,
    files: &AgentPki,
    dir: &Path,
    stop: &CancellationToken,
) -> anyhow::Result<AgentHandle> {
    let (cert, key) = pki
        .issue_node_client(&node.name)?
        .write_to(dir, &format!("agent-{}", node.name))?;
    let tls = AgentConfig::client_tls(&files.ca, Some((&cert, &key)))?;
    let mut config = AgentConfig::new(files.listen.to_string(), tls, node.name.clone())?;
    config.identifiers = format!("host={}&ipv4={}", node.name, node.address);
    Ok(Agent::spawn(config, stop.child_token()))
}

pub(super) async fn start_node(
    i: u8,
    kubelet_port: u16,
    pki: &Pki,
    client_key: &sshbridge_sim::keys::PrivateKey,
    stop: &CancellationToken,
) -> anyhow::Result<SimNode> {
    let name = format!("node-{}", (b'a' + i - 1) as char);
    let address = Ipv4Addr::new(127, 77, 0, i);
    let bind = |port| async move {
        TcpListener::bind((address, port)).await.with_context(|| {
            format!("cannot bind {address}:{port} (loopback; is 127.0.0.0/8 routed to lo?)")
        })
    };
    let host_key = keys::generate_ed25519();
    let host_public = host_key.public_key().clone();
    let sshd = SimSshd::start(
        bind(0).await?,
        SimSshdConfig {
            host_key,
            authorized: vec![client_key.public_key().clone()],
            allow: vec![
                ipnet::IpNet::from(IpAddr::V4(address)),
                format!("127.78.{i}.0/24").parse()?,
            ],
            name: name.clone(),
        },
        stop.clone(),
    );
    let cert = pki.issue_server(&[IpAddr::V4(address)], &[&name])?;
    let kubelet = Kubelet::start(
        bind(kubelet_port).await?,
        name.clone(),
        pki.server_config(&cert)?,
        stop.clone(),
    )?;
    let pod_listener = TcpListener::bind((Ipv4Addr::new(127, 78, i, 10), 0)).await?;
    let pod = pod_listener.local_addr()?;
    tokio::spawn(echo_server(pod_listener, stop.clone()));
    Ok(SimNode {
        name,
        address,
        sshd,
        host_key: host_public,
        kubelet,
        pod,
    })
}

/// The bridge's config for the simulated cluster.
pub(super) fn config_text(
    dir: &Path,
    kubelet_ca: &Path,
    agents: &AgentPki,
    nodes: &[SimNode],
) -> String {
    let mut t = format!(
        "[bridge]\nid = \"demo\"\n\n[egress]\nhttp_connect_uds = \"{d}/egress.sock\"\ngrpc_uds = \"{d}/konnectivity.sock\"\n\
         dial_timeout = \"5s\"\n\n[ssh]\nuser = \"demo\"\nidentity = \"{d}/id_ed25519\"\nknown_hosts = \"{d}/known_hosts\"\n\
         keepalive_interval = \"2s\"\n\n[health]\ninterval = \"500ms\"\nkubelet_port = {port}\nkubelet_ca = \"{ca}\"\n\
         down_after = 2\nup_after = 1\n\n[admin]\nlisten = \"unix:{d}/admin.sock\"\n\n\
         [konnectivity]\nagent_listen = \"{listen}\"\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{ca}\"\n\n\
         [migration]\nstore = \"file:{d}/migration.json\"\nbatch_size = \"2\"\nshadow_probes = 3\nsoak = \"2s\"\n\
         max_latency_ratio = 10.0\n",
        d = dir.display(),
        ca = kubelet_ca.display(),
        port = nodes.first().map_or(10250, |n| n.kubelet.local_addr().port()),
        listen = agents.listen,
        cert = agents.server_cert.display(),
        key = agents.server_key.display(),
    );
    for (i, n) in nodes.iter().enumerate() {
        let _ = write!(
            t,
            "\n[[node]]\nname = \"{}\"\naddress = \"{}\"\nssh_address = \"{}\"\npod_cidrs = [\"127.78.{}.0/24\"]\n",
            n.name,
            n.address,
            n.sshd.local_addr(),
            i + 1
        );
    }
    t
}

pub(super) async fn wait_until_up(daemon: &Daemon, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let nodes = daemon.nodes();
        if nodes.iter().all(|n| n.state == TunnelState::Up) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let down: Vec<String> = nodes
                .iter()
                .filter(|n| n.state != TunnelState::Up)
                .map(|n| {
                    format!(
                        "{}: {}",
                        n.name,
                        n.stats.last_error.clone().unwrap_or_default()
                    )
                })
                .collect();
            bail!("tunnels not up after {limit:?}: {}", down.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
