//! Node inventory from the API: what one Node object gives the bridge (a
//! node, or the reason it cannot be served), and the watch that keeps the
//! whole set current ([`watch`]).
//!
//! A Node becomes a [`sshbridge_config::Node`] exactly like a `[[node]]`
//! entry would: `metadata.name`, the first `status.addresses` entry of the
//! preferred types that is an IP address, pod CIDRs from `spec.podCIDRs`
//! (else `spec.podCIDR`), sshd at the SSH address annotation or at
//! `address:[inventory] ssh_port`. Host keys are not judged here: the
//! daemon checks each node against known_hosts before it serves it.

mod watch;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node as KubeNode;
use sshbridge_config::{HostPort, Inventory, Node, Route};

pub use watch::{run, Published, WatchHealth, WatchStatus};

/// One Node object as the bridge sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// A node the bridge can serve once its host key is known (the daemon
    /// checks known_hosts).
    Node(Node),
    /// A Node the API lists but the bridge cannot serve, with the reason
    /// (naming the field and the fix).
    Unservable(String),
}

/// Every watched Node by name: the inventory of one moment.
pub type Discovered = BTreeMap<String, Found>;

/// What `node` gives the bridge under `settings`.
pub fn found(node: &KubeNode, settings: &Inventory) -> Found {
    let name = node.metadata.name.clone().unwrap_or_default();
    match convert(&name, node, settings) {
        Ok(f) => f,
        Err(reason) => Found::Unservable(reason),
    }
}

fn convert(name: &str, node: &KubeNode, settings: &Inventory) -> Result<Found, String> {
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default();
    let address = settings
        .address_types
        .iter()
        .find_map(|t| {
            addresses
                .iter()
                .filter(|a| &a.type_ == t)
                .find_map(|a| a.address.trim().parse::<IpAddr>().ok())
        })
        .ok_or_else(|| {
            let listed: Vec<String> = addresses
                .iter()
                .map(|a| format!("{} {}", a.type_, a.address))
                .collect();
            format!(
                "no IP address of a preferred type ({}) in status.addresses [{}]; \
                 add one of those types (the kubelet reports them) or widen [inventory] address_types",
                settings.address_types.join(", "),
                listed.join(", ")
            )
        })?;
    let spec = node.spec.as_ref();
    let cidrs: Vec<String> = match spec.and_then(|s| s.pod_cidrs.clone()) {
        Some(list) if !list.is_empty() => list,
        _ => spec.and_then(|s| s.pod_cidr.clone()).into_iter().collect(),
    };
    let pod_cidrs = cidrs
        .iter()
        .map(|c| {
            c.trim()
                .parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| format!("spec.podCIDRs: {c:?} is not a CIDR; fix the Node's spec"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let annotations = node.metadata.annotations.as_ref();
    let annotation = |key: &str| annotations.and_then(|a| a.get(key));
    let ssh_address = match annotation(&settings.ssh_address_annotation) {
        Some(v) => ssh_address(v, settings.ssh_port).ok_or_else(|| {
            format!(
                "annotation {}: {v:?} is not host, host:port or [v6]:port; fix or remove it",
                settings.ssh_address_annotation
            )
        })?,
        None => HostPort::new(address.to_string(), settings.ssh_port),
    };
    Ok(Found::Node(Node {
        name: name.to_owned(),
        address,
        ssh_address,
        pod_cidrs,
        route: Route::Ssh,
    }))
}

/// `host`, `host:port`, `v4:port`, `[v6]:port` or a bare IP; a host name
/// must be plain DNS (no pattern characters that known_hosts would read
/// as wildcards).
fn ssh_address(v: &str, default_port: u16) -> Option<HostPort> {
    let v = v.trim();
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Some(HostPort::new(sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(HostPort::new(ip.to_string(), default_port));
    }
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => (v, default_port),
    };
    let dns = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    dns.then(|| HostPort::new(host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests;
