//! `manifests node-sshd`: what a node's sshd must allow the bridge, and
//! nothing more. Either an `sshd_config` `Match User` block or one
//! `authorized_keys` line with `restrict` options, for every selected node
//! (the `PermitOpen` list names the node's own address, so it differs per
//! node). docs/least-privilege.md explains each choice.

use std::net::IpAddr;

use ipnet::IpNet;
use sshbridge_config::{Config, Node};

use super::node_sshd_opts::{
    NodeSshdError, NodeSshdForm, NodeSshdOptions, PermitScope, MAX_PERMIT_ENTRIES,
};

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
