//! The file's static nodes plus the discovered ones: static entries win a
//! name; a discovered node is served only with a known host key and an
//! address and pod CIDRs no other node has.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use sshbridge_config::{Config, InventorySource};
use sshbridge_kubeapi::inventory::{Discovered, Found};

use crate::report::Unservable;
use crate::ssh::{HostIdentity, KnownHosts};

/// Where the applied nodes came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub(in crate::daemon) struct View {
    /// From `[[node]]` entries.
    pub(in crate::daemon) static_nodes: Vec<String>,
    /// Served because the API lists them.
    pub(in crate::daemon) discovered: Vec<String>,
    /// Listed by the API, not served, with the reason.
    pub(in crate::daemon) unservable: Vec<Unservable>,
}

/// The configuration to apply, and where its nodes came from.
pub(in crate::daemon) struct Merged {
    pub(in crate::daemon) config: Config,
    pub(in crate::daemon) view: View,
}

/// `file` with the servable nodes of `discovered` appended (by name).
pub(in crate::daemon) fn merge(file: &Config, discovered: &Discovered) -> Merged {
    let mut config = file.clone();
    let mut view = View {
        static_nodes: file.nodes.iter().map(|n| n.name.clone()).collect(),
        ..View::default()
    };
    if file.inventory.source == InventorySource::Static {
        return Merged { config, view };
    }
    let known = KnownHosts::load(&file.ssh.known_hosts);
    let names: HashSet<&str> = file.nodes.iter().map(|n| n.name.as_str()).collect();
    let mut addresses: HashMap<IpAddr, String> = file
        .nodes
        .iter()
        .map(|n| (n.address, n.name.clone()))
        .collect();
    let mut cidrs: HashMap<IpNet, String> = file
        .nodes
        .iter()
        .flat_map(|n| n.pod_cidrs.iter().map(|c| (*c, n.name.clone())))
        .collect();
    for (name, found) in discovered {
        if names.contains(name.as_str()) {
            continue;
        }
        let refuse = |reason: String| Unservable {
            name: name.clone(),
            reason,
        };
        let node = match found {
            Found::Unservable(reason) => {
                view.unservable.push(refuse(reason.clone()));
                continue;
            }
            Found::Node(node) => node,
        };
        if let Some(other) = addresses.get(&node.address) {
            view.unservable.push(refuse(format!(
                "address {} is also node {other}'s; give each node its own address",
                node.address
            )));
            continue;
        }
        if let Some((cidr, other)) = node
            .pod_cidrs
            .iter()
            .find_map(|c| cidrs.get(c).map(|o| (c, o)))
        {
            view.unservable.push(refuse(format!(
                "pod CIDR {cidr} is also node {other}'s; fix the Nodes' spec.podCIDRs"
            )));
            continue;
        }
        let id = HostIdentity {
            node: node.name.clone(),
            address: node.address.to_string(),
            ssh: node.ssh_address.clone(),
        };
        let known_key = match &known {
            Ok(k) => {
                let (algorithms, ca) = k.known_algorithms(&id);
                !algorithms.is_empty() || ca
            }
            Err(_) => false,
        };
        if !known_key {
            view.unservable.push(refuse(format!(
                "no host key for {} in [ssh] known_hosts {}; add the node's host key, or a \
                 @cert-authority line for host certificates, then send SIGHUP (no session is \
                 attempted until then)",
                id.candidates().join(" or "),
                file.ssh.known_hosts.display()
            )));
            continue;
        }
        addresses.insert(node.address, node.name.clone());
        for c in &node.pod_cidrs {
            cidrs.insert(*c, node.name.clone());
        }
        view.discovered.push(node.name.clone());
        config.nodes.push(node.clone());
    }
    Merged { config, view }
}
