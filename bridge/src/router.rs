//! Routing: which node a dial target belongs to, and where on that node to
//! dial it. The rules of DESIGN.md "Routing":
//!
//! - a node's `name` or `address` -> that node, dialed at its `address`
//!   (a node's own resolver often maps its hostname to 127.0.1.1);
//! - an IP inside one node's `pod_cidrs` -> that node;
//! - an IP inside `service_cidrs` -> a node whose active path is healthy,
//!   spread round-robin per stream;
//! - anything else is refused: the bridge is never an open proxy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use ipnet::IpNet;
use sshbridge_config::Node;

/// Where a stream goes: the node whose path carries it, and the address to
/// dial as seen from that node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Name of the node whose path carries the stream.
    pub node: String,
    /// Host to dial from the node (an IP literal or the host as given).
    pub host: String,
    /// Port to dial.
    pub port: u16,
}

/// Why a target was not routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not a node, not in a node's pod CIDRs, not in a service CIDR. HTTP 403.
    #[error(
        "destination {target} is not allowed: it is not a node name or address, \
         not in a node's pod_cidrs and not in egress.service_cidrs"
    )]
    Forbidden {
        /// The target as requested.
        target: String,
    },
    /// A service address, but no node's active path is up. HTTP 503.
    #[error(
        "destination {target} is a service address, but no node has a healthy path to carry it"
    )]
    NoHealthyNode {
        /// The target as requested.
        target: String,
    },
}

impl RouteError {
    /// The HTTP status an egress frontend answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            RouteError::Forbidden { .. } => 403,
            RouteError::NoHealthyNode { .. } => 503,
        }
    }
}

struct Entry {
    name: String,
    address: IpAddr,
    pod_cidrs: Vec<IpNet>,
}

/// The routing table of one configuration. Built once per (re)load, then
/// read concurrently by every stream.
pub struct Table {
    nodes: Vec<Entry>,
    by_name: HashMap<String, usize>,
    by_address: HashMap<IpAddr, usize>,
    service_cidrs: Vec<IpNet>,
    /// Round-robin cursor for service destinations.
    next_service: AtomicUsize,
}

impl Table {
    /// Builds the table from the configured nodes and service CIDRs.
    /// The config loader already rejected duplicate names, addresses and
    /// overlapping pod CIDRs, so the first match is the only match.
    pub fn new(nodes: &[Node], service_cidrs: &[IpNet]) -> Table {
        let nodes: Vec<Entry> = nodes
            .iter()
            .map(|n| Entry {
                name: n.name.clone(),
                address: n.address,
                pod_cidrs: n.pod_cidrs.clone(),
            })
            .collect();
        let by_name = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.to_ascii_lowercase(), i))
            .collect();
        let by_address = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.address, i))
            .collect();
        Table {
            nodes,
            by_name,
            by_address,
            service_cidrs: service_cidrs.to_vec(),
            next_service: AtomicUsize::new(0),
        }
    }

    /// Resolves `host:port`. `healthy(node)` tells whether a node's active
    /// path is up; it is only asked for service destinations.
    pub fn resolve(
        &self,
        host: &str,
        port: u16,
        healthy: impl Fn(&str) -> bool,
    ) -> Result<Decision, RouteError> {
        let to_node = |i: usize, dial_host: String| Decision {
            node: self.nodes[i].name.clone(),
            host: dial_host,
            port,
        };
        let ip = host.parse::<IpAddr>().ok().map(canonical);
        let Some(ip) = ip else {
            return match self.by_name.get(&host.to_ascii_lowercase()) {
                Some(&i) => Ok(to_node(i, self.nodes[i].address.to_string())),
                None => Err(self.forbidden(host, port)),
            };
        };
        if let Some(&i) = self.by_address.get(&ip) {
            return Ok(to_node(i, ip.to_string()));
        }
        if let Some(i) = self
            .nodes
            .iter()
            .position(|n| n.pod_cidrs.iter().any(|c| c.contains(&ip)))
        {
            return Ok(to_node(i, ip.to_string()));
        }
        if self.service_cidrs.iter().any(|c| c.contains(&ip)) {
            let count = self.nodes.len();
            let start = self.next_service.fetch_add(1, Ordering::Relaxed);
            return (0..count)
                .map(|k| (start + k) % count)
                .find(|&i| healthy(&self.nodes[i].name))
                .map(|i| to_node(i, ip.to_string()))
                .ok_or_else(|| RouteError::NoHealthyNode {
                    target: format_target(host, port),
                });
        }
        Err(self.forbidden(host, port))
    }

    fn forbidden(&self, host: &str, port: u16) -> RouteError {
        RouteError::Forbidden {
            target: format_target(host, port),
        }
    }
}

/// `::ffff:10.0.0.5` is the IPv4 address for routing purposes.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `host:port`, with brackets around IPv6 literals.
pub fn format_target(host: &str, port: u16) -> String {
    sshbridge_core::HostPort::new(host, port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, addr: &str, pods: &[&str]) -> Node {
        let pods = pods.iter().map(|p| p.parse().unwrap()).collect();
        Node::new(name, addr.parse().unwrap(), pods)
    }

    fn table() -> Table {
        Table::new(
            &[
                node("node-a", "127.0.1.1", &["127.1.1.0/24"]),
                node("node-b", "127.0.1.2", &["127.1.2.0/24"]),
                node("node-c", "127.0.1.3", &[]),
            ],
            &["127.96.0.0/16".parse().unwrap()],
        )
    }

    #[test]
    fn node_name_dials_the_node_address() {
        let d = table().resolve("node-b", 10250, |_| true).unwrap();
        assert_eq!(
            d,
            Decision {
                node: "node-b".into(),
                host: "127.0.1.2".into(),
                port: 10250
            }
        );
        let d = table().resolve("NODE-A", 22, |_| true).unwrap();
        assert_eq!(d.node, "node-a");
    }

    #[test]
    fn node_address_and_pod_ips_route_to_their_node() {
        let t = table();
        assert_eq!(
            t.resolve("127.0.1.3", 10250, |_| true).unwrap().node,
            "node-c"
        );
        let d = t.resolve("127.1.2.77", 8080, |_| true).unwrap();
        assert_eq!((d.node.as_str(), d.host.as_str()), ("node-b", "127.1.2.77"));
        let mapped = t.resolve("::ffff:127.1.1.9", 80, |_| true).unwrap();
        assert_eq!(mapped.node, "node-a");
    }

    #[test]
    fn service_ips_spread_over_healthy_nodes_only() {
        let t = table();
        let picks: Vec<String> = (0..4)
            .map(|_| {
                t.resolve("127.96.0.10", 443, |n| n != "node-b")
                    .unwrap()
                    .node
            })
            .collect();
        assert!(picks.iter().all(|n| n != "node-b"), "{picks:?}");
        assert!(picks.contains(&"node-a".to_string()) && picks.contains(&"node-c".to_string()));
        let none = t.resolve("127.96.0.10", 443, |_| false).unwrap_err();
        assert_eq!(none.http_status(), 503);
    }

    #[test]
    fn everything_else_is_forbidden() {
        let t = table();
        for host in ["127.0.0.1", "example.com", "::1", "127.2.0.1", "node-z"] {
            let e = t.resolve(host, 443, |_| true).unwrap_err();
            assert_eq!(e.http_status(), 403, "{host}");
        }
        let e = t.resolve("::1", 443, |_| true).unwrap_err();
        assert!(e.to_string().contains("[::1]:443"), "{e}");
    }
}
