//! `manifests node-sshd`: what a node's sshd must allow the bridge, and
//! nothing more. Either an `sshd_config` `Match User` block or one
//! `authorized_keys` line with `restrict` options, for every selected node
//! (the `PermitOpen` list names the node's own address, so it differs per
//! node). docs/least-privilege.md explains each choice.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use sshbridge_config::{Config, Node};

/// The command sshd runs instead of anything a client asks for: it only
/// waits, so an `ssh -L` session without `-N` (an operator debugging by
/// hand) keeps its forwards, and no client-chosen program ever runs.
pub const WAIT_COMMAND: &str = "/bin/sleep infinity";

/// Most `PermitOpen` entries `--scope node` writes for one node (pod
/// CIDRs are listed address by address; PermitOpen has no CIDR syntax).
pub const MAX_PERMIT_ENTRIES: usize = 1024;

/// Which of the two node-side forms to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeSshdForm {
    /// A `Match User` block to append to the end of `/etc/ssh/sshd_config`.
    #[default]
    SshdConfig,
    /// One `authorized_keys` line (OpenSSH 7.2 or later for `restrict`).
    AuthorizedKeys,
}

/// What the node lets the bridge dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PermitScope {
    /// Only the kubelet: `ADDRESS:[health].kubelet_port`. Enough for
    /// exec, logs, port-forward, metrics and the bridge's health probe.
    #[default]
    Kubelet,
    /// Every port of the node's address and every address of its pod
    /// CIDRs (listed one by one; at most [`MAX_PERMIT_ENTRIES`]).
    Node,
    /// Any destination (`PermitOpen any`): needed for `egress.service_cidrs`,
    /// which the bridge spreads over all nodes. Still no shell, no pty, no
    /// agent, no listening.
    Any,
}

/// Flags of `manifests node-sshd`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeSshdOptions {
    /// `--form`.
    pub form: NodeSshdForm,
    /// `--scope`.
    pub scope: PermitScope,
    /// `--node NAME` (repeatable); empty: every node of the config.
    pub nodes: Vec<String>,
    /// `--permit HOST:PORT` (repeatable): more `PermitOpen` entries.
    pub extra_permits: Vec<String>,
    /// The bridge's public key line (`ssh-ed25519 AAAA... comment`), for
    /// the `authorized_keys` form without a user CA.
    pub public_key: Option<String>,
    /// `--user-ca FILE`: certificate mode; the CA public key file as the
    /// nodes hold it, and its contents (for the `authorized_keys` form).
    pub user_ca: Option<(PathBuf, String)>,
    /// `--principal`: the principal the nodes accept (default: `[ssh].user`).
    pub principal: Option<String>,
    /// `--principals-file`: `AuthorizedPrincipalsFile` on the nodes.
    pub principals_file: PathBuf,
}

/// Why the node-side setup cannot be printed; each names the flag to use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSshdError {
    /// `--node` names a node the config does not have.
    #[error(
        "{config}: there is no [[node]] named {name:?}; `--node` takes a name from the config"
    )]
    NoSuchNode {
        /// The config file.
        config: String,
        /// The name given.
        name: String,
    },
    /// `--scope node` with pod CIDRs too large to list.
    #[error(
        "node {node}: its pod_cidrs hold {count} addresses, more than the {max} PermitOpen \
         entries --scope node writes; use --scope any (sshd cannot match a CIDR)"
    )]
    TooManyAddresses {
        /// Node name.
        node: String,
        /// Addresses that would be listed.
        count: u128,
        /// The limit.
        max: usize,
    },
    /// A `--permit` value sshd would not parse as one entry.
    #[error("--permit {0:?}: expected HOST:PORT or [IPV6]:PORT, `*` allowed for either, no spaces or quotes")]
    BadPermit(String),
    /// The authorized_keys form needs a key to restrict.
    #[error("the authorized_keys form needs the bridge's public key: put it next to [ssh].identity as IDENTITY.pub, or use --user-ca")]
    NoPublicKey,
}

/// The node-side setup for the selected nodes of `cfg`.
pub fn node_sshd(cfg: &Config, opts: &NodeSshdOptions) -> Result<String, NodeSshdError> {
    for p in &opts.extra_permits {
        if !valid_permit(p) {
            return Err(NodeSshdError::BadPermit(p.clone()));
        }
    }
    let mut nodes = Vec::new();
    for name in &opts.nodes {
        match cfg.nodes.iter().find(|n| &n.name == name) {
            Some(n) => nodes.push(n),
            None => {
                return Err(NodeSshdError::NoSuchNode {
                    config: cfg.source.display().to_string(),
                    name: name.clone(),
                })
            }
        }
    }
    if opts.nodes.is_empty() {
        nodes = cfg.nodes.iter().collect();
    }
    let mut out = super::header(
        &format!(
            "Node-side sshd setup for bridge {:?} ({}).",
            cfg.bridge.id,
            match opts.form {
                NodeSshdForm::SshdConfig => "sshd_config Match block",
                NodeSshdForm::AuthorizedKeys => "authorized_keys line",
            }
        ),
        &cfg.source,
    );
    out.push_str(&super::node_sshd_text::preamble(cfg, opts));
    for node in nodes {
        let permits = permits(cfg, node, opts)?;
        out.push_str(&format!(
            "\n# ---- node {} ({}) ----\n",
            node.name, node.address
        ));
        for line in not_permitted(cfg, node, opts.scope) {
            out.push_str(&format!("# Not permitted here: {line}\n"));
        }
        let text = match opts.form {
            NodeSshdForm::SshdConfig => super::node_sshd_text::match_block(cfg, opts, &permits),
            NodeSshdForm::AuthorizedKeys => {
                super::node_sshd_text::authorized_keys(cfg, opts, &permits)?
            }
        };
        out.push_str(&text);
    }
    Ok(out)
}

/// The `PermitOpen` entries of `node`; empty means any destination.
pub fn permits(
    cfg: &Config,
    node: &Node,
    opts: &NodeSshdOptions,
) -> Result<Vec<String>, NodeSshdError> {
    let mut out = match opts.scope {
        PermitScope::Any => return Ok(Vec::new()),
        PermitScope::Kubelet => vec![entry(node.address, &cfg.health.kubelet_port.to_string())],
        PermitScope::Node => {
            let count: u128 = node.pod_cidrs.iter().map(size).sum::<u128>() + 1;
            if count > MAX_PERMIT_ENTRIES as u128 {
                return Err(NodeSshdError::TooManyAddresses {
                    node: node.name.clone(),
                    count,
                    max: MAX_PERMIT_ENTRIES,
                });
            }
            let mut v = vec![entry(node.address, "*")];
            for net in &node.pod_cidrs {
                v.extend(net.hosts().map(|ip| entry(ip, "*")));
            }
            v
        }
    };
    for p in &opts.extra_permits {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// What the config routes to `node` that `scope` leaves out, one phrase
/// each naming the fix.
fn not_permitted(cfg: &Config, node: &Node, scope: PermitScope) -> Vec<String> {
    let mut out = Vec::new();
    if scope == PermitScope::Kubelet {
        out.push(format!(
            "ports of {} other than the kubelet's {} (apiserver proxy to node ports); widen with --permit {} or --scope node",
            node.address,
            cfg.health.kubelet_port,
            entry(node.address, "PORT")
        ));
        for net in &node.pod_cidrs {
            out.push(format!(
                "pod CIDR {net} (apiserver proxy to pods); widen with --scope node"
            ));
        }
    }
    if scope != PermitScope::Any {
        for net in &cfg.egress.service_cidrs {
            out.push(format!(
                "service CIDR {net} (apiserver proxy to services, spread over all nodes); \
                 sshd cannot match a CIDR, so only --scope any allows it"
            ));
        }
    }
    out
}

/// One `PermitOpen` entry, IPv6 in brackets.
fn entry(ip: IpAddr, port: &str) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn size(net: &IpNet) -> u128 {
    match net {
        IpNet::V4(n) => 1u128 << (32 - u32::from(n.prefix_len())),
        IpNet::V6(n) => {
            let bits = 128 - u32::from(n.prefix_len());
            if bits >= 127 {
                u128::MAX
            } else {
                1u128 << bits
            }
        }
    }
}

fn valid_permit(p: &str) -> bool {
    let Some((host, port)) = p.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*' | '_'))
    };
    host_ok && (port == "*" || port.parse::<u16>().is_ok_and(|n| n > 0))
}
