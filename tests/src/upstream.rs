//! Upstream Konnectivity (kubernetes-sigs/apiserver-network-proxy) as a
//! peer of sshbridge: its `proxy-server` in either frontend mode, its
//! `proxy-agent` for one node, its `proxy-test-client`, an HTTP target for
//! that client, and the connection counts that show nothing was left open.
//!
//! The binaries are not built here: `ANP_BIN` names their directory (see
//! docs/upstream.md). Without it the interop tests say
//! `skipped: ANP_BIN not set` and pass.

mod conns;
mod http;
mod procs;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use conns::{socket_fds, tcp_conns, Counts, Probe};
pub use http::HttpTarget;
pub use procs::{anp_bin, test_client, TestClientRun, Upstream};

use sshbridge_sim::pki::Pki;

use crate::bridge::KonnectivityConfig;
use crate::cluster::{Cluster, Node};

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A port on `ip` below the ephemeral range, free a moment ago: upstream
/// refuses ports above 49151 for its server, request and proxy ports.
pub fn low_port(ip: IpAddr) -> anyhow::Result<u16> {
    for _ in 0..200 {
        let port = rand::random::<u16>() % 12_000 + 20_000;
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in 20000..32000 on {ip}")
}

/// Where upstream programs keep their files and get their certificates:
/// a test's [`Cluster`], or the bench's own directory and CA.
pub struct Site<'a> {
    /// Each program gets a subdirectory (certificates, socket, log).
    pub dir: &'a Path,
    /// Issues the server's and the agents' certificates.
    pub pki: &'a Pki,
    /// `ca.crt` of `pki`: verifies agents, and the server for agents.
    pub ca_path: &'a Path,
    /// klog's `-v`: 3 in tests (their `observed:` lines quote it), 0 (the
    /// upstream default) in the bench, so logging costs what it costs
    /// operators.
    pub verbosity: u8,
}

impl<'a> From<&'a Cluster> for Site<'a> {
    fn from(c: &'a Cluster) -> Self {
        Site {
            dir: c.dir.path(),
            pki: &c.pki,
            ca_path: &c.ca_path,
            verbosity: 3,
        }
    }
}

/// The frontend mode of an upstream `proxy-server` (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ProxyService.Proxy` over the unix socket.
    Grpc,
    /// HTTP CONNECT over the unix socket.
    HttpConnect,
}

impl Mode {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Grpc => "grpc",
            Mode::HttpConnect => "http-connect",
        }
    }
}

/// A running upstream `proxy-server`: agents connect with mTLS to
/// `agent_addr`, clients use the unix socket `uds`.
pub struct UpstreamServer {
    /// The process.
    pub process: Upstream,
    /// Its frontend mode.
    pub mode: Mode,
    /// `--uds-name`
    pub uds: PathBuf,
    /// `--agent-port` on 127.0.0.1.
    pub agent_addr: SocketAddr,
    /// `--health-port` on 127.0.0.1 (`/readyz` is 200 once an agent is
    /// connected).
    pub health_addr: SocketAddr,
}

impl UpstreamServer {
    /// Starts `proxy-server --mode=MODE` with a server certificate for
    /// 127.0.0.1 from the cluster CA, agents verified by that CA. Ports are
    /// picked below the ephemeral range; a lost race for one is retried.
    pub async fn start<'a>(
        anp: &Path,
        site: impl Into<Site<'a>>,
        mode: Mode,
    ) -> anyhow::Result<Self> {
        let site = site.into();
        let dir = site.dir.join(format!("anp-server-{}", mode.as_str()));
        std::fs::create_dir_all(&dir)?;
        let pair = site.pki.issue_server(&[LOOPBACK], &["proxy-server"])?;
        let (cert, key) = pair.write_to(&dir, "cluster")?;
        let uds = dir.join("proxy.sock");
        let mut last = String::new();
        for attempt in 0..3 {
            let [agent, health, admin] = [0; 3].map(|_| low_port(LOOPBACK));
            let (agent, health, admin) = (agent?, health?, admin?);
            let args = vec![
                format!("--mode={}", mode.as_str()),
                format!("--uds-name={}", uds.display()),
                "--delete-existing-uds-file=true".into(),
                "--server-port=0".into(),
                format!("--agent-port={agent}"),
                "--agent-bind-address=127.0.0.1".into(),
                format!("--health-port={health}"),
                "--health-bind-address=127.0.0.1".into(),
                format!("--admin-port={admin}"),
                "--admin-bind-address=127.0.0.1".into(),
                format!("--cluster-cert={}", cert.display()),
                format!("--cluster-key={}", key.display()),
                format!("--cluster-ca-cert={}", site.ca_path.display()),
                "--server-id=anp-e2e".into(),
                "--server-count=1".into(),
                "--proxy-strategies=destHost,default".into(),
                format!("-v={}", site.verbosity),
            ];
            let log = dir.join(format!("proxy-server-{attempt}.log"));
            let name = format!("proxy-server {}", mode.as_str());
            let process = Upstream::start(&name, anp.join("proxy-server"), args, log)?;
            let mut server = UpstreamServer {
                process,
                mode,
                uds: uds.clone(),
                agent_addr: SocketAddr::new(LOOPBACK, agent),
                health_addr: SocketAddr::new(LOOPBACK, health),
            };
            let up = async {
                loop {
                    if !server.process.is_running() {
                        return false;
                    }
                    if server.uds.exists() && http_get(server.health_addr, "/healthz").await.is_ok()
                    {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            match tokio::time::timeout(Duration::from_secs(30), up).await {
                Ok(true) => return Ok(server),
                _ => last = server.process.log_tail(30),
            }
            server.process.kill().await?;
        }
        bail!("proxy-server did not come up in 3 attempts; last log:\n{last}")
    }

    /// Waits until the server has an agent (`/readyz` answers 200).
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let poll = async {
            loop {
                if let Ok((200, _)) = http_get(self.health_addr, "/readyz").await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(within, poll).await.map_err(|_| {
            anyhow::anyhow!(
                "{} has no agent after {within:?}; log:\n{}",
                self.process.name,
                self.process.log_tail(30)
            )
        })
    }
}

/// A running upstream `proxy-agent` for one node.
pub struct UpstreamAgent {
    /// The process.
    pub process: Upstream,
    /// `--health-server-port` on 127.0.0.1.
    pub health_addr: SocketAddr,
}

impl UpstreamAgent {
    /// Starts `proxy-agent` against `server` (TLS, verified by the cluster
    /// CA) for `node`: identifiers `host=NAME&ipv4=ADDR`, and a client
    /// certificate that names the node (CN `system:node:NAME`), as a
    /// per-node agent identity requires.
    pub async fn start(
        anp: &Path,
        cluster: &Cluster,
        node: &Node,
        server: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::start_at(anp, cluster.into(), &node.name, node.address, server).await
    }

    /// [`UpstreamAgent::start`] for a node given by name and address.
    pub async fn start_at(
        anp: &Path,
        site: Site<'_>,
        name: &str,
        address: IpAddr,
        server: SocketAddr,
    ) -> anyhow::Result<Self> {
        let dir = site.dir.join(format!("anp-agent-{name}"));
        std::fs::create_dir_all(&dir)?;
        let pair = site.pki.issue_client(&format!("system:node:{name}"))?;
        let (cert, key) = pair.write_to(&dir, "agent")?;
        let health = crate::net::free_port(LOOPBACK)?;
        let admin = crate::net::free_port(LOOPBACK)?;
        let args = vec![
            format!("--proxy-server-host={}", server.ip()),
            format!("--proxy-server-port={}", server.port()),
            format!("--ca-cert={}", site.ca_path.display()),
            format!("--agent-cert={}", cert.display()),
            format!("--agent-key={}", key.display()),
            format!("--agent-id=anp-{name}"),
            format!("--agent-identifiers=host={name}&ipv4={address}"),
            "--health-server-host=127.0.0.1".into(),
            format!("--health-server-port={health}"),
            "--admin-bind-address=127.0.0.1".into(),
            format!("--admin-server-port={admin}"),
            "--sync-interval=100ms".into(),
            "--sync-interval-cap=1s".into(),
            "--probe-interval=200ms".into(),
            format!("-v={}", site.verbosity),
        ];
        let log = dir.join("proxy-agent.log");
        let name = format!("proxy-agent {name}");
        let process = Upstream::start(&name, anp.join("proxy-agent"), args, log)?;
        Ok(UpstreamAgent {
            process,
            health_addr: SocketAddr::new(LOOPBACK, health),
        })
    }

    /// An upstream agent for `node` against the bridge's agent server.
    pub async fn for_bridge(
        anp: &Path,
        cluster: &Cluster,
        k: &KonnectivityConfig,
        node: &Node,
    ) -> anyhow::Result<Self> {
        Self::start(anp, cluster, node, k.agent_listen).await
    }
}

/// One plain HTTP/1.1 GET to `addr`; (status, body). Bounded by 5 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .context("GET timed out")??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// The pid of the one running process whose command line contains
/// `needle` (e.g. a config path or a `--server` address unique to a test).
pub fn pid_of(needle: &str) -> anyhow::Result<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")?.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            found.push(pid);
        }
    }
    match found[..] {
        [pid] => Ok(pid),
        _ => bail!(
            "{} processes have {needle:?} in their command line",
            found.len()
        ),
    }
}
