//! `[[node]]` entries: per-node values and the rules across nodes (unique
//! names and addresses, disjoint pod CIDRs).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::Ctx;
use crate::model::{HostPort, Node, Route};
use crate::raw::RawNode;
use crate::units::{self, Problem};

pub(super) fn nodes(
    cx: &mut Ctx<'_>,
    raw: &[RawNode],
    ssh_port: u16,
    have_konnectivity: bool,
) -> Vec<Node> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addresses: HashMap<IpAddr, (usize, &str)> = HashMap::new();
    // (cidr, line of its value, owning node name)
    let mut cidrs: Vec<(IpNet, usize, &str)> = Vec::new();
    let mut out = Vec::with_capacity(raw.len());

    for n in raw {
        let name = n.name.get_ref().as_str();
        let name_line = cx.d.line_of(&n.name.span());
        if !units::is_dns1123_subdomain(name) {
            let p = Problem {
                message: format!("{name:?} is not a valid Kubernetes node name"),
                hint: Some(
                    "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit".into(),
                ),
            };
            cx.report(&n.name.span(), "node.name", p);
        }
        if let Some(first) = names.get(name) {
            let p = Problem {
                message: format!("duplicate node name {name:?}, first defined on line {first}"),
                hint: Some("each [[node]] needs its own name".into()),
            };
            cx.report(&n.name.span(), "node.name", p);
        } else {
            names.insert(name, name_line);
        }

        let address = match n.address.get_ref().trim().parse::<IpAddr>() {
            Ok(a) => a,
            Err(_) => {
                let p = Problem {
                    message: format!("node {name}: {:?} is not an IP address", n.address.get_ref()),
                    hint: Some("write the node's InternalIP, e.g. \"10.0.0.5\"; a host name belongs in ssh_address".into()),
                };
                cx.report(&n.address.span(), "node.address", p);
                IpAddr::from([0, 0, 0, 0])
            }
        };
        if !address.is_unspecified() {
            let line = cx.d.line_of(&n.address.span());
            if let Some((first_line, first)) = addresses.get(&address) {
                let p = Problem {
                    message: format!(
                        "node {name}: address {address} is already used by node {first} on line {first_line}"
                    ),
                    hint: Some("node addresses must be unique".into()),
                };
                cx.report(&n.address.span(), "node.address", p);
            } else {
                addresses.insert(address, (line, name));
            }
        }

        let ssh_address = match &n.ssh_address {
            None => HostPort {
                host: address.to_string(),
                port: ssh_port,
            },
            Some(v) => units::host_port(v.get_ref()).unwrap_or_else(|p| {
                let p = Problem {
                    message: format!("node {name}: {}", p.message),
                    ..p
                };
                cx.report(&v.span(), "node.ssh_address", p);
                HostPort {
                    host: address.to_string(),
                    port: ssh_port,
                }
            }),
        };

        let mut pod_cidrs = Vec::new();
        for v in n.pod_cidrs.iter().flatten() {
            let net = match units::cidr(v.get_ref()) {
                Ok(net) => net,
                Err(p) => {
                    let p = Problem {
                        message: format!("node {name}: {}", p.message),
                        ..p
                    };
                    cx.report(&v.span(), "node.pod_cidrs", p);
                    continue;
                }
            };
            let line = cx.d.line_of(&v.span());
            let clash = cidrs.iter().find(|(other, _, _)| {
                other.contains(&net.network()) || net.contains(&other.network())
            });
            if let Some((other, other_line, owner)) = clash {
                let p = Problem {
                    message: format!(
                        "node {name}: pod CIDR {net} overlaps {other} of node {owner} on line {other_line}"
                    ),
                    hint: Some("each pod address must route to exactly one node".into()),
                };
                cx.report(&v.span(), "node.pod_cidrs", p);
            }
            cidrs.push((net, line, name));
            pod_cidrs.push(net);
        }

        let route = match n.route.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
            None | Some(("ssh", _)) => Route::Ssh,
            Some(("konnectivity", span)) => {
                if !have_konnectivity {
                    let p = Problem {
                        message: format!("node {name} is routed over konnectivity but there is no [konnectivity] section"),
                        hint: Some("add [konnectivity] or set route = \"ssh\"".into()),
                    };
                    cx.report(&span, "node.route", p);
                }
                Route::Konnectivity
            }
            Some((other, span)) => {
                let p = Problem {
                    message: format!("node {name}: unknown route {other:?}"),
                    hint: Some("write \"ssh\" or \"konnectivity\"".into()),
                };
                cx.report(&span, "node.route", p);
                Route::Ssh
            }
        };

        out.push(Node {
            name: name.to_owned(),
            address,
            ssh_address,
            pod_cidrs,
            route,
        });
    }
    out
}
