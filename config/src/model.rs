//! The resolved runtime configuration: every default applied, every value
//! parsed, no `Option` that the daemon has to unwrap at run time.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
mod kubernetes;
mod migration;
pub use kubernetes::*;
pub use migration::*;

/// The whole, validated configuration of one bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this was loaded from (for messages and reloads).
    pub source: PathBuf,
    /// `[bridge]`
    pub bridge: Bridge,
    /// `[egress]`
    pub egress: Egress,
    /// `[ssh]`
    pub ssh: Ssh,
    /// `[health]`
    pub health: Health,
    /// `[admin]`
    pub admin: Admin,
    /// `[konnectivity]`, absent when the section is absent.
    pub konnectivity: Option<Konnectivity>,
    /// `[migration]`
    pub migration: Migration,
    /// `[kubernetes]`, absent when the section is absent.
    pub kubernetes: Option<Kubernetes>,
    /// `[inventory]`
    pub inventory: Inventory,
    /// `[ha]`: per-bridge status objects (health across bridges).
    pub ha: Ha,
    /// `[[node]]`, in file order. Names and addresses are unique.
    pub nodes: Vec<Node>,
}

/// `[bridge]`
#[derive(Debug, Clone, PartialEq)]
pub struct Bridge {
    /// This bridge's id; defaults to the host name.
    pub id: String,
}

/// `[egress]`: how kube-apiserver reaches the bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct Egress {
    /// HTTP CONNECT over a unix socket (created mode 0600).
    pub http_connect_uds: Option<PathBuf>,
    /// HTTP CONNECT over TCP with mandatory mutual TLS.
    pub http_connect_tcp: Option<TlsListener>,
    /// Konnectivity `ProxyService` over a unix socket.
    pub grpc_uds: Option<PathBuf>,
    /// How long one dial through a node may take before 504.
    pub dial_timeout: Duration,
    /// Destinations allowed besides node addresses and pod CIDRs.
    pub service_cidrs: Vec<IpNet>,
    /// Longest CONNECT request head accepted, in bytes.
    pub max_request_head: usize,
    /// How long a client has to send its whole request head.
    pub request_head_timeout: Duration,
    /// TLS handshakes in flight at once on `http_connect_tcp`; more
    /// connections are closed at once.
    pub max_tls_handshakes: usize,
    /// Time a client of `http_connect_tcp` has to finish its TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// HTTP/2 streams (dials) per connection of the gRPC egress.
    pub grpc_max_concurrent_streams: u32,
    /// A stream (either path) with no byte either way for this long is
    /// closed; `None` (the default) never closes an idle stream.
    pub stream_idle_timeout: Option<Duration>,
}

/// A TCP listener with mutual TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsListener {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA bundle that client certificates must chain to (PEM).
    pub client_ca: PathBuf,
}

/// `[ssh]`: the tunnels to the nodes' sshd.
#[derive(Debug, Clone, PartialEq)]
pub struct Ssh {
    /// Remote user name.
    pub user: String,
    /// Private key file (ed25519, ECDSA or RSA; OpenSSH or PEM format).
    pub identity: PathBuf,
    /// OpenSSH user certificate for `identity` (`ssh-keygen -s CA -I ID -n
    /// PRINCIPAL key.pub`); `None` authenticates with the plain key.
    pub certificate: Option<PathBuf>,
    /// A warning fires when less than this is left before the
    /// certificate's expiry.
    pub certificate_warn_before: Duration,
    /// known_hosts file; strict checking, hashed entries, `@cert-authority`.
    pub known_hosts: PathBuf,
    /// Default sshd port when a node has no `ssh_address`.
    pub port: u16,
    /// TCP connect plus SSH handshake deadline.
    pub connect_timeout: Duration,
    /// Keepalive period.
    pub keepalive_interval: Duration,
    /// Unanswered keepalives before the peer is declared dead.
    pub keepalive_max: u32,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Handshakes in flight at once, across all nodes.
    pub max_concurrent_handshakes: usize,
    /// SSH receive window per stream: the most bytes held for a client that
    /// reads slower than its node sends; past it the node's sender waits.
    pub max_stream_buffer: usize,
    /// Most data messages queued per stream before the queue is compacted
    /// into one chunk (memory follows bytes, not message count).
    pub max_stream_chunks: usize,
    /// SSH sessions kept to each node; a dial takes the one with the
    /// fewest open streams (1..=8, default 1).
    pub sessions_per_node: usize,
    /// Threads the nodes' sessions run on, each node on one of them
    /// (0, the default: one per CPU).
    pub threads: usize,
}

/// Jittered exponential backoff.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Growth per attempt (>= 1.0).
    pub multiplier: f64,
    /// Random spread, as a fraction of the delay (0.0 ..= 1.0).
    pub jitter: f64,
}

/// `[health]`: probes of each node's paths.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Probe period per node.
    pub interval: Duration,
    /// Kubelet port probed on the node address.
    pub kubelet_port: u16,
    /// Kubelet path probed.
    pub kubelet_path: String,
    /// CA that verifies the kubelet's serving certificate; `None` disables
    /// the HTTPS probe (only tunnel liveness is checked).
    pub kubelet_ca: Option<PathBuf>,
    /// Consecutive failures before `down`.
    pub down_after: u32,
    /// Consecutive successes before `up`.
    pub up_after: u32,
}

/// Where the admin HTTP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `unix:/path` (created mode 0600).
    Unix(PathBuf),
    /// `host:port`.
    Tcp(SocketAddr),
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// Where `/livez`, `/readyz`, `/metrics`, `/report` are served.
    pub listen: Listen,
    /// TLS of a TCP listener (`cert`, `key`, and `client_ca` for mutual
    /// TLS); `None` serves plain HTTP (loopback with a token only).
    pub tls: Option<AdminTls>,
    /// File holding the bearer token a TCP caller may present instead of a
    /// client certificate (mode 0600; read at start).
    pub token_file: Option<PathBuf>,
    /// TLS handshakes in flight at once on a TCP `listen` with TLS.
    pub max_tls_handshakes: usize,
    /// Time a TCP caller has to finish its TLS handshake.
    pub tls_handshake_timeout: Duration,
}

/// `[admin] cert`, `key`, `client_ca`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminTls {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA that callers' client certificates must chain to; a verified
    /// certificate authenticates a caller.
    pub client_ca: Option<PathBuf>,
}

/// `[konnectivity] identity`: how an agent's node is established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentIdentity {
    /// `"proven"` (default): the agent's client certificate names its node
    /// (CN `system:node:NAME` or a SAN DNS name `NAME`), and everything its
    /// `agentIdentifiers` claim must agree with that node's inventory.
    #[default]
    Proven,
    /// `"claimed"`: an agent serves whatever nodes its `agentIdentifiers`
    /// name. For fleets that share one agent certificate; any agent that
    /// passes TLS can then serve any node.
    Claimed,
}

impl AgentIdentity {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentIdentity::Proven => "proven",
            AgentIdentity::Claimed => "claimed",
        }
    }
}

/// `[konnectivity]`: the agent-facing server.
#[derive(Debug, Clone, PartialEq)]
pub struct Konnectivity {
    /// Address agents dial (TLS always).
    pub agent_listen: SocketAddr,
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// When set, agents must present a certificate chaining to this CA.
    pub client_ca: Option<PathBuf>,
    /// `serverCount` announced to agents.
    pub server_count: u32,
    /// TLS handshakes in flight at once on `agent_listen`.
    pub max_tls_handshakes: usize,
    /// Time an agent has to finish its TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// HTTP/2 streams per agent connection.
    pub max_concurrent_streams: u32,
    /// How an agent's node is established.
    pub identity: AgentIdentity,
    /// With `identity = "proven"`, the credential that proves it.
    pub agent_auth: crate::AgentAuth,
    /// sshbridge wire extensions offered to agents: `half-close`, `credit`
    /// (docs/konnectivity.md).
    pub extensions: Vec<String>,
    /// Receive window per connection with the `credit` extension, bytes.
    pub credit_window: usize,
    /// Compatibility mode: total time one reader may keep an agent's
    /// stream waiting within `stall_window`.
    pub stall_timeout: Duration,
    /// The window of `stall_timeout`.
    pub stall_window: Duration,
    /// Compatibility mode: how long a target may stay silent after the
    /// client's EOF before the connection is closed.
    pub half_close_idle: Duration,
    /// Most connections open through one agent.
    pub max_connections_per_agent: u32,
    /// Most control packets queued towards one agent before it is
    /// disconnected as not reading.
    pub max_queued_control: u32,
}

impl Config {
    /// Settings that are valid but weaken security, one sentence each
    /// naming the key and the fix. `config check` prints them and the
    /// daemon logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let file = self.source.display();
        if let Some(k) = self
            .konnectivity
            .as_ref()
            .filter(|k| k.identity == AgentIdentity::Claimed)
        {
            let how = if k.client_ca.is_some() {
                "any agent with a certificate from konnectivity.client_ca"
            } else {
                "any TLS client, with no certificate at all (client_ca is unset),"
            };
            out.push(format!(
                "{file}: konnectivity.identity = \"claimed\": {how} can serve any node by naming it in agentIdentifiers, \
                 and receives that node's exec, logs and port-forward traffic; give each agent its node's certificate \
                 (CN system:node:NAME) and remove the key"
            ));
        }
        out
    }
}

/// A node's path: its SSH tunnel or its Konnectivity agents. Also the
/// value of a node's `route` (the path that serves its new streams).
/// Serialized in lower case (`"ssh"`, `"konnectivity"`), as in the config
/// file and reports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// The node's SSH tunnel.
    Ssh,
    /// The node's Konnectivity agents.
    Konnectivity,
}

/// The path that serves a node's new streams (a node's `route`).
pub type Route = PathKind;

impl PathKind {
    /// Every kind, in report order.
    pub const ALL: [PathKind; 2] = [PathKind::Ssh, PathKind::Konnectivity];

    /// The name used in config files, reports, metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Ssh => "ssh",
            PathKind::Konnectivity => "konnectivity",
        }
    }
}

impl std::fmt::Display for PathKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Node {
    /// A node as a config file with only `name`, `address` and
    /// `pod_cidrs` would give it: sshd on `address:22`, route `ssh`.
    pub fn new(name: impl Into<String>, address: IpAddr, pod_cidrs: Vec<IpNet>) -> Node {
        Node {
            name: name.into(),
            address,
            ssh_address: HostPort {
                host: address.to_string(),
                port: 22,
            },
            pod_cidrs,
            route: Route::Ssh,
        }
    }
}

/// A `host:port` pair where the host may be a name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Host name or IP (no brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One `[[node]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Node name (as in Kubernetes).
    pub name: String,
    /// Node IP: where the kubelet listens and, by default, sshd.
    pub address: IpAddr,
    /// Where the node's sshd is reached: `ssh_address`, else `address:[ssh].port`.
    pub ssh_address: HostPort,
    /// Pod CIDRs whose addresses route to this node.
    pub pod_cidrs: Vec<IpNet>,
    /// The path that serves the node's new streams at start.
    pub route: Route,
}
