//! kube-apiserver's EgressSelectorConfiguration (`--egress-selector-config-file`)
//! for the `cluster` egress.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sshbridge_config::Config;

use super::{header, quote_path, ManifestError};

/// How kube-apiserver talks to the egress socket (`proxyProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressProtocol {
    /// Konnectivity's `ProxyService` gRPC (`GRPC`).
    Grpc,
    /// HTTP CONNECT (`HTTPConnect`).
    HttpConnect,
}

impl EgressProtocol {
    /// The `proxyProtocol` value kube-apiserver expects.
    pub fn proxy_protocol(self) -> &'static str {
        match self {
            EgressProtocol::Grpc => "GRPC",
            EgressProtocol::HttpConnect => "HTTPConnect",
        }
    }
}

impl fmt::Display for EgressProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.proxy_protocol())
    }
}

impl FromStr for EgressProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "grpc" => Ok(EgressProtocol::Grpc),
            "http-connect" | "httpconnect" => Ok(EgressProtocol::HttpConnect),
            _ => Err(format!("unknown protocol {s:?}: use grpc or http-connect")),
        }
    }
}

/// Flags of `manifests egress-selector` (and of `migrate finalize`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressOptions {
    /// `--protocol`; by default GRPC when `egress.grpc_uds` is set (or
    /// `--uds` is given), else HTTPConnect.
    pub protocol: Option<EgressProtocol>,
    /// `--uds PATH`: use this socket (e.g. an upstream konnectivity-server's)
    /// instead of the bridge's own.
    pub uds: Option<PathBuf>,
}

/// The protocol and socket kube-apiserver should use, from the config's
/// `[egress]` and the flags.
pub fn resolve_egress(
    cfg: &Config,
    opts: &EgressOptions,
) -> Result<(EgressProtocol, PathBuf), ManifestError> {
    if let Some(uds) = &opts.uds {
        return Ok((opts.protocol.unwrap_or(EgressProtocol::Grpc), uds.clone()));
    }
    let e = &cfg.egress;
    let protocol = opts.protocol.unwrap_or(if e.grpc_uds.is_some() {
        EgressProtocol::Grpc
    } else {
        EgressProtocol::HttpConnect
    });
    let (socket, key) = match protocol {
        EgressProtocol::Grpc => (&e.grpc_uds, "grpc_uds"),
        EgressProtocol::HttpConnect => (&e.http_connect_uds, "http_connect_uds"),
    };
    match socket {
        Some(p) => Ok((protocol, p.clone())),
        None => Err(ManifestError::NoEgressSocket {
            config: cfg.source.clone(),
            protocol,
            key,
        }),
    }
}

/// The EgressSelectorConfiguration for `cfg` and the flags.
pub fn egress_selector(cfg: &Config, opts: &EgressOptions) -> Result<String, ManifestError> {
    let (protocol, uds) = resolve_egress(cfg, opts)?;
    Ok(egress_selector_yaml(protocol, &uds, &cfg.source))
}

/// The EgressSelectorConfiguration sending the `cluster` egress over `uds`
/// with `protocol`; `config` is named in the header comment.
pub fn egress_selector_yaml(protocol: EgressProtocol, uds: &Path, config: &Path) -> String {
    let mut out = header(
        "kube-apiserver --egress-selector-config-file: the `cluster` egress \
         (logs, exec, port-forward, /proxy, webhooks) goes through this socket.",
        config,
    );
    out.push_str(&format!(
        "apiVersion: apiserver.k8s.io/v1beta1\n\
         kind: EgressSelectorConfiguration\n\
         egressSelections:\n\
         - name: cluster\n\
         \x20 connection:\n\
         \x20   proxyProtocol: {}\n\
         \x20   transport:\n\
         \x20     uds:\n\
         \x20       udsName: {}\n",
        protocol.proxy_protocol(),
        quote_path(uds)
    ));
    out
}
