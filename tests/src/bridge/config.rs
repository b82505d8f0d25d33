//! The bridge's config file as a test writes it: the SSH-only core
//! ([`BridgeConfig`]) and, for tests of the second path, the Konnectivity
//! server, the gRPC egress, per-node routes and migration tuning
//! ([`KonnectivityConfig`]). Key names are those of DESIGN.md.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use sshbridge_config::Route;

/// One `[[node]]` of the bridge config.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    /// `name`
    pub name: String,
    /// `address`
    pub address: IpAddr,
    /// `ssh_address`
    pub ssh_address: SocketAddr,
    /// `pod_cidrs`
    pub pod_cidrs: Vec<String>,
}

/// `[egress] http_connect_tcp`.
#[derive(Debug, Clone)]
pub struct TcpEgress {
    /// `listen`
    pub listen: SocketAddr,
    /// `cert`
    pub cert: PathBuf,
    /// `key`
    pub key: PathBuf,
    /// `client_ca`
    pub client_ca: PathBuf,
    /// Client TLS config trusting the bridge's certificate, holding a
    /// client certificate (for [`Egress::Tls`]).
    pub client: Arc<rustls::ClientConfig>,
}

/// The bridge config a test runs with; rendered to TOML with the key names
/// of DESIGN.md. Durations and sizes are the strings the file holds.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Where the config file, sockets and log live.
    pub dir: PathBuf,
    /// `[egress] http_connect_uds`
    pub uds: PathBuf,
    /// `[egress] http_connect_tcp`
    pub tcp: Option<TcpEgress>,
    /// `[admin]` on TCP with its credentials; `None`: the unix socket
    /// [`BridgeConfig::admin_socket`].
    pub admin_tcp: Option<AdminTcp>,
    /// `[egress] dial_timeout`
    pub dial_timeout: String,
    /// `[ssh] user`
    pub user: String,
    /// `[ssh] identity`
    pub identity: PathBuf,
    /// `[ssh] known_hosts`
    pub known_hosts: PathBuf,
    /// `[ssh] connect_timeout`
    pub connect_timeout: String,
    /// `[ssh] keepalive_interval`
    pub keepalive_interval: String,
    /// `[ssh] keepalive_max`
    pub keepalive_max: u32,
    /// `[ssh] backoff.initial` / `backoff.max`
    pub backoff: (String, String),
    /// `[ssh] max_stream_buffer`
    pub max_stream_buffer: String,
    /// Extra `key = value` lines put in `[ssh]` (`certificate = ...`).
    pub extra_ssh_lines: Vec<String>,
    /// `[health] interval`
    pub health_interval: String,
    /// `[health] kubelet_port`
    pub kubelet_port: u16,
    /// `[health] kubelet_ca`
    pub kubelet_ca: Option<PathBuf>,
    /// `[health] down_after`
    pub down_after: u32,
    /// `[health] up_after`
    pub up_after: u32,
    /// Extra `key = value` lines put in `[bridge]` (to make a config
    /// invalid on purpose; an `id = ...` line replaces the default `e2e`).
    pub extra_bridge_lines: Vec<String>,
    /// `[[node]]`
    pub nodes: Vec<NodeEntry>,
}

impl BridgeConfig {
    /// The config file's TOML.
    pub fn to_toml(&self) -> String {
        self.to_toml_with(None)
    }

    /// The config file's TOML with the Konnectivity sections of `k`.
    pub fn to_toml_with(&self, k: Option<&KonnectivityConfig>) -> String {
        let q = |p: &Path| toml_str(&p.display().to_string());
        let mut t = String::from("[bridge]\n");
        if !self
            .extra_bridge_lines
            .iter()
            .any(|l| l.starts_with("id = "))
        {
            t.push_str("id = \"e2e\"\n");
        }
        for line in &self.extra_bridge_lines {
            t.push_str(line);
            t.push('\n');
        }
        t.push_str(&format!(
            "\n[egress]\nhttp_connect_uds = {}\n",
            q(&self.uds)
        ));
        if let Some(grpc) = k.and_then(|k| k.grpc_uds.as_ref()) {
            t.push_str(&format!("grpc_uds = {}\n", q(grpc)));
        }
        if let Some(tcp) = &self.tcp {
            t.push_str(&format!(
                "http_connect_tcp = {{ listen = \"{}\", cert = {}, key = {}, client_ca = {} }}\n",
                tcp.listen,
                q(&tcp.cert),
                q(&tcp.key),
                q(&tcp.client_ca)
            ));
        }
        t.push_str(&format!(
            "dial_timeout = \"{}\"\nservice_cidrs = []\n",
            self.dial_timeout
        ));
        t.push_str(&format!(
            "\n[ssh]\nuser = {}\nidentity = {}\nknown_hosts = {}\nconnect_timeout = \"{}\"\n\
             keepalive_interval = \"{}\"\nkeepalive_max = {}\n\
             backoff = {{ initial = \"{}\", max = \"{}\", multiplier = 2.0, jitter = 0.2 }}\n\
             max_stream_buffer = \"{}\"\n",
            toml_str(&self.user),
            q(&self.identity),
            q(&self.known_hosts),
            self.connect_timeout,
            self.keepalive_interval,
            self.keepalive_max,
            self.backoff.0,
            self.backoff.1,
            self.max_stream_buffer,
        ));
        for line in &self.extra_ssh_lines {
            t.push_str(line);
            t.push('\n');
        }
        t.push_str(&format!(
            "\n[health]\ninterval = \"{}\"\nkubelet_port = {}\nkubelet_path = \"/healthz\"\n\
             down_after = {}\nup_after = {}\n",
            self.health_interval, self.kubelet_port, self.down_after, self.up_after
        ));
        if let Some(ca) = &self.kubelet_ca {
            t.push_str(&format!("kubelet_ca = {}\n", q(ca)));
        }
        let admin = match &self.admin_tcp {
            None => format!(
                "listen = {}\n",
                toml_str(&format!("unix:{}", self.admin_socket().display()))
            ),
            Some(a) => a.keys(),
        };
        t.push_str(&format!(
            "\n[admin]\n{admin}\n[migration]\nstore = {}\n",
            toml_str(&format!(
                "file:{}",
                self.dir.join("migration.json").display()
            )),
        ));
        if let Some(k) = k {
            t.push_str(&k.sections());
        }
        for n in &self.nodes {
            let cidrs: Vec<String> = n.pod_cidrs.iter().map(|c| toml_str(c)).collect();
            t.push_str(&format!(
                "\n[[node]]\nname = {}\naddress = \"{}\"\nssh_address = \"{}\"\npod_cidrs = [{}]\n",
                toml_str(&n.name),
                n.address,
                n.ssh_address,
                cidrs.join(", ")
            ));
            if let Some(route) = k.and_then(|k| k.routes.get(&n.name)) {
                t.push_str(&format!("route = \"{}\"\n", route.as_str()));
            }
        }
        t
    }

    /// `[admin] listen`: a unix socket in [`BridgeConfig::dir`].
    pub fn admin_socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    /// The config file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join("sshbridge.toml")
    }

    /// Writes the config file.
    pub fn write(&self) -> anyhow::Result<PathBuf> {
        self.write_with(None)
    }

    /// Writes the config file with the Konnectivity sections of `k`.
    pub fn write_with(&self, k: Option<&KonnectivityConfig>) -> anyhow::Result<PathBuf> {
        let path = self.path();
        std::fs::write(&path, self.to_toml_with(k))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `[migration]` tuning (besides `store`, which the kit always sets).
#[derive(Debug, Clone)]
pub struct MigrationTuning {
    /// `batch_size`, a count or a percentage.
    pub batch_size: String,
    /// `shadow_probes`
    pub shadow_probes: u32,
    /// `max_failure_ratio`
    pub max_failure_ratio: f64,
    /// `max_latency_ratio`
    pub max_latency_ratio: f64,
    /// `soak`
    pub soak: String,
}

impl Default for MigrationTuning {
    /// Short enough for a test: 2 probes per path, a 2s soak, one node per
    /// batch, and latency ratios that loopback noise cannot breach.
    fn default() -> Self {
        MigrationTuning {
            batch_size: "1".into(),
            shadow_probes: 2,
            max_failure_ratio: 0.0,
            max_latency_ratio: 50.0,
            soak: "2s".into(),
        }
    }
}

/// A TCP admin listener and how callers authenticate to it.
#[derive(Debug, Clone)]
pub struct AdminTcp {
    /// `[admin] listen` (127.0.0.1, a port free when chosen).
    pub listen: SocketAddr,
    /// `[admin] cert` and `key`: TLS with an IP SAN 127.0.0.1.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `[admin] client_ca`.
    pub client_ca: Option<PathBuf>,
    /// `[admin] token_file`.
    pub token_file: Option<PathBuf>,
}

impl AdminTcp {
    fn keys(&self) -> String {
        let q = |p: &Path| toml_str(&p.display().to_string());
        let mut t = format!("listen = \"{}\"\n", self.listen);
        if let Some((cert, key)) = &self.tls {
            t.push_str(&format!("cert = {}\nkey = {}\n", q(cert), q(key)));
        }
        if let Some(ca) = &self.client_ca {
            t.push_str(&format!("client_ca = {}\n", q(ca)));
        }
        if let Some(f) = &self.token_file {
            t.push_str(&format!("token_file = {}\n", q(f)));
        }
        t
    }
}

/// The Konnectivity side of a bridge config, and what its agents need to
/// reach it.
#[derive(Debug, Clone)]
pub struct KonnectivityConfig {
    /// `[konnectivity] agent_listen` (127.0.0.1, a port free when chosen).
    pub agent_listen: SocketAddr,
    /// `[konnectivity] cert`: IP SAN 127.0.0.1.
    pub cert: PathBuf,
    /// `[konnectivity] key`
    pub key: PathBuf,
    /// `[konnectivity] client_ca`: agents must present a certificate from it.
    pub client_ca: Option<PathBuf>,
    /// `[egress] grpc_uds`
    pub grpc_uds: Option<PathBuf>,
    /// `[[node]] route` of the nodes named here (others: the default, ssh).
    pub routes: BTreeMap<String, Route>,
    /// `[migration]` tuning.
    pub migration: MigrationTuning,
    /// The CA agents verify the server with (`--ca-cert`).
    pub agent_ca: PathBuf,
    /// A client certificate and key from the cluster CA that names no node
    /// (CN `konnectivity-agent`): what a shared-certificate fleet uses.
    pub agent_identity: (PathBuf, PathBuf),
    /// Each node's own agent certificate (CN `system:node:NAME`), by node
    /// name: what agents present when identity is proven.
    pub agent_identities: BTreeMap<String, (PathBuf, PathBuf)>,
    /// `[konnectivity] identity`, when not the default (`"claimed"`).
    pub identity: Option<String>,
    /// Client TLS trusting the server and holding the agent identity, for
    /// tests that talk to the agent port themselves.
    pub agent_tls: Arc<rustls::ClientConfig>,
    /// TOML put after the `[konnectivity]` keys: more keys of it, then
    /// tables of its own (`[konnectivity.tokenreview]`, `[kubernetes]`).
    pub extra: String,
}

impl KonnectivityConfig {
    /// `[konnectivity]` and the `[migration]` keys, rendered after the
    /// kit's `[migration] store = ...` line.
    fn sections(&self) -> String {
        let m = &self.migration;
        let mut t = format!(
            "batch_size = {}\nshadow_probes = {}\nmax_failure_ratio = {:?}\n\
             max_latency_ratio = {:?}\nsoak = \"{}\"\n",
            toml_str(&m.batch_size),
            m.shadow_probes,
            m.max_failure_ratio,
            m.max_latency_ratio,
            m.soak
        );
        let q = |p: &Path| toml_str(&p.display().to_string());
        t.push_str(&format!(
            "\n[konnectivity]\nagent_listen = \"{}\"\ncert = {}\nkey = {}\n",
            self.agent_listen,
            q(&self.cert),
            q(&self.key)
        ));
        if let Some(ca) = &self.client_ca {
            t.push_str(&format!("client_ca = {}\n", q(ca)));
        }
        if let Some(identity) = &self.identity {
            t.push_str(&format!("identity = {}\n", toml_str(identity)));
        }
        t.push_str(&self.extra);
        t
    }

    /// Sets `node`'s route.
    pub fn route(&mut self, node: &str, route: Route) {
        self.routes.insert(node.to_string(), route);
    }
}
