//! The file as written: serde structs mirroring DESIGN.md's TOML, every key
//! optional unless the design makes it mandatory, every value spanned so a
//! problem can be reported at its `line:col`.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// A spanned string value.
pub(crate) type Str = Spanned<String>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub bridge: RawBridge,
    #[serde(default)]
    pub egress: RawEgress,
    #[serde(default)]
    pub ssh: RawSsh,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub admin: RawAdmin,
    pub konnectivity: Option<RawKonnectivity>,
    #[serde(default)]
    pub migration: RawMigration,
    pub kubernetes: Option<RawKubernetes>,
    #[serde(default)]
    pub inventory: RawInventory,
    #[serde(default)]
    pub ha: RawHa,
    #[serde(default)]
    pub node: Vec<RawNode>,
}

/// `[ha]`: what a bridge shares with the other bridges of its control plane.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHa {
    pub status: Option<Str>,
    pub status_interval: Option<Str>,
}

/// `[inventory]`: where the node list comes from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInventory {
    pub source: Option<Str>,
    pub node_selector: Option<Str>,
    pub address_types: Option<Vec<Str>>,
    pub ssh_port: Option<Spanned<i64>>,
    pub ssh_address_annotation: Option<Str>,
    pub watch_grace: Option<Str>,
}

/// `[kubernetes]`: how the bridge reaches the Kubernetes API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKubernetes {
    pub kubeconfig: Option<Str>,
    pub context: Option<Str>,
}

/// `[bridge]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBridge {
    pub id: Option<Str>,
}

/// `[egress]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEgress {
    pub http_connect_uds: Option<Str>,
    pub http_connect_tcp: Option<RawTlsListener>,
    pub grpc_uds: Option<Str>,
    pub dial_timeout: Option<Str>,
    pub service_cidrs: Option<Vec<Str>>,
    pub max_request_head: Option<Spanned<StrOrInt>>,
    pub request_head_timeout: Option<Str>,
    pub max_tls_handshakes: Option<Spanned<i64>>,
    pub tls_handshake_timeout: Option<Str>,
    pub grpc_max_concurrent_streams: Option<Spanned<i64>>,
    pub stream_idle_timeout: Option<Str>,
}

/// `[egress] http_connect_tcp = { ... }`: all four keys are mandatory, since
/// mutual TLS is not optional on TCP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTlsListener {
    pub listen: Str,
    pub cert: Str,
    pub key: Str,
    pub client_ca: Str,
}

/// `[ssh]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSsh {
    pub user: Option<Str>,
    pub identity: Option<Str>,
    pub certificate: Option<Str>,
    pub certificate_warn_before: Option<Str>,
    pub known_hosts: Option<Str>,
    pub port: Option<Spanned<i64>>,
    pub connect_timeout: Option<Str>,
    pub keepalive_interval: Option<Str>,
    pub keepalive_max: Option<Spanned<i64>>,
    #[serde(default)]
    pub backoff: RawBackoff,
    pub max_concurrent_handshakes: Option<Spanned<i64>>,
    pub max_stream_buffer: Option<Spanned<StrOrInt>>,
    pub max_stream_chunks: Option<Spanned<i64>>,
    pub sessions_per_node: Option<Spanned<i64>>,
    pub threads: Option<Spanned<i64>>,
}

/// `[ssh] backoff = { ... }`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackoff {
    pub initial: Option<Str>,
    pub max: Option<Str>,
    pub multiplier: Option<Spanned<f64>>,
    pub jitter: Option<Spanned<f64>>,
}

/// `[health]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub interval: Option<Str>,
    pub kubelet_port: Option<Spanned<i64>>,
    pub kubelet_path: Option<Str>,
    pub kubelet_ca: Option<Str>,
    pub down_after: Option<Spanned<i64>>,
    pub up_after: Option<Spanned<i64>>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Option<Str>,
    pub cert: Option<Str>,
    pub key: Option<Str>,
    pub client_ca: Option<Str>,
    pub token_file: Option<Str>,
    pub max_tls_handshakes: Option<Spanned<i64>>,
    pub tls_handshake_timeout: Option<Str>,
}

/// `[konnectivity]`; the server needs its certificate and key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKonnectivity {
    pub agent_listen: Option<Str>,
    pub cert: Str,
    pub key: Str,
    pub client_ca: Option<Str>,
    pub server_count: Option<Spanned<i64>>,
    pub max_tls_handshakes: Option<Spanned<i64>>,
    pub tls_handshake_timeout: Option<Str>,
    pub max_concurrent_streams: Option<Spanned<i64>>,
    pub identity: Option<Str>,
    pub agent_auth: Option<Str>,
    pub tokenreview: Option<RawTokenReview>,
    pub extensions: Option<Vec<Str>>,
    pub credit_window: Option<Spanned<StrOrInt>>,
    pub stall_timeout: Option<Str>,
    pub stall_window: Option<Str>,
    pub half_close_idle: Option<Str>,
    pub max_connections_per_agent: Option<Spanned<i64>>,
    pub max_queued_control: Option<Spanned<i64>>,
}

/// `[konnectivity.tokenreview]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTokenReview {
    pub audiences: Option<Vec<Str>>,
    pub service_accounts: Option<Vec<Str>>,
    pub cache_ttl: Option<Str>,
}

/// `[migration]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMigration {
    pub store: Option<Str>,
    pub batch_size: Option<Spanned<StrOrInt>>,
    pub shadow_probes: Option<Spanned<i64>>,
    pub max_failure_ratio: Option<Spanned<f64>>,
    pub max_latency_ratio: Option<Spanned<f64>>,
    pub soak: Option<Str>,
    pub leader_election: Option<RawLeaderElection>,
}

/// `[migration.leader_election]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLeaderElection {
    pub lease: Option<Str>,
    pub lease_duration: Option<Str>,
    pub renew_deadline: Option<Str>,
    pub retry_period: Option<Str>,
}

/// `[[node]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub name: Str,
    pub address: Str,
    pub ssh_address: Option<Str>,
    pub pod_cidrs: Option<Vec<Str>>,
    pub route: Option<Str>,
}

/// A value that may be written as a string (`"4MiB"`, `"10%"`) or a bare
/// integer (`8192`, `3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StrOrInt {
    Str(String),
    Int(i64),
}

impl<'de> Deserialize<'de> for StrOrInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrOrInt;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrOrInt, E> {
                Ok(StrOrInt::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrOrInt, E> {
                i64::try_from(v)
                    .map(StrOrInt::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrInt, E> {
                Ok(StrOrInt::Str(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}
