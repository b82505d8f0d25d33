//! The `agentIdentifiers` metadata of a Konnectivity agent and how an agent
//! is matched to the bridge's nodes.
//!
//! The value is URL-query text: `host=node-a&ipv4=10.0.0.5&cidr=10.244.1.0/24`.
//! Keys may repeat; unknown keys and values that do not parse are ignored (an
//! agent of a newer version must still connect).

use std::net::IpAddr;

use ipnet::IpNet;
use sshbridge_config::Node;

/// What an agent says it can reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Identifiers {
    /// `host=`: host names (compared with node names, case-insensitively).
    pub hosts: Vec<String>,
    /// `ipv4=` and `ipv6=`: addresses (compared with node addresses).
    pub addresses: Vec<IpAddr>,
    /// `cidr=`: networks (overlapping a node's pod CIDRs).
    pub cidrs: Vec<IpNet>,
    /// `default-route=true`: the agent can dial anywhere. Recorded and
    /// reported, but it does not make the agent serve any node: the bridge
    /// routes a node's traffic only through that node's own agents.
    pub default_route: bool,
}

impl Identifiers {
    /// Parses the URL-query form. Never fails: unknown keys and malformed
    /// values are skipped.
    pub fn parse(query: &str) -> Identifiers {
        let mut ids = Identifiers::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "host" if !value.is_empty() => ids.hosts.push(value.into_owned()),
                "ipv4" | "ipv6" => {
                    if let Ok(ip) = value.parse::<IpAddr>() {
                        ids.addresses.push(canonical(ip));
                    }
                }
                "cidr" => {
                    if let Ok(net) = value.parse::<IpNet>() {
                        ids.cidrs.push(net.trunc());
                    }
                }
                "default-route" => ids.default_route = value.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        ids
    }

    /// Whether this agent serves `node`: its name is one of the hosts, its
    /// address one of the addresses, or one of its pod CIDRs overlaps one of
    /// the agent's CIDRs.
    pub fn matches(&self, node: &Node) -> bool {
        self.hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&node.name))
            || self.addresses.contains(&canonical(node.address))
            || node
                .pod_cidrs
                .iter()
                .any(|pod| self.cidrs.iter().any(|c| overlaps(c, pod)))
    }
}

impl std::fmt::Display for Identifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self.hosts.iter().map(|h| format!("host={h}")).collect();
        for ip in &self.addresses {
            let key = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
            parts.push(format!("{key}={ip}"));
        }
        parts.extend(self.cidrs.iter().map(|c| format!("cidr={c}")));
        if self.default_route {
            parts.push("default-route=true".into());
        }
        f.write_str(&parts.join("&"))
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// `::ffff:10.0.0.5` is the IPv4 address for matching purposes.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, addr: &str, pods: &[&str]) -> Node {
        let pods = pods.iter().map(|p| p.parse().unwrap()).collect();
        Node::new(name, addr.parse().unwrap(), pods)
    }

    #[test]
    fn parses_every_known_key_and_skips_the_rest() {
        let ids = Identifiers::parse(
            "host=Node-A&ipv4=10.0.0.5&ipv6=fd00%3A%3A5&cidr=10.244.1.7/24&default-route=true&zone=x&ipv4=bogus",
        );
        assert_eq!(ids.hosts, ["Node-A"]);
        assert_eq!(
            ids.addresses,
            [
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(ids.cidrs, ["10.244.1.0/24".parse::<IpNet>().unwrap()]);
        assert!(ids.default_route);
        assert_eq!(
            ids.to_string(),
            "host=Node-A&ipv4=10.0.0.5&ipv6=fd00::5&cidr=10.244.1.0/24&default-route=true"
        );
    }

    #[test]
    fn empty_and_odd_input_gives_no_identifiers() {
        assert_eq!(Identifiers::parse(""), Identifiers::default());
        let ids = Identifiers::parse("&&host=&%zz=1&ipv4=%");
        assert_eq!(ids, Identifiers::default());
        // `+` is a space, `%XX` a byte, and a bad escape stays as it is.
        let ids = Identifiers::parse("host=a+b%41&host=c%2");
        assert_eq!(ids.hosts, ["a bA", "c%2"]);
    }

    #[test]
    fn matches_by_name_address_or_pod_cidr() {
        let a = node("node-a", "10.0.0.5", &["10.244.1.0/24"]);
        assert!(Identifiers::parse("host=NODE-A").matches(&a));
        assert!(Identifiers::parse("ipv4=10.0.0.5").matches(&a));
        assert!(Identifiers::parse("ipv6=::ffff:10.0.0.5").matches(&a));
        assert!(Identifiers::parse("cidr=10.244.0.0/16").matches(&a));
        assert!(Identifiers::parse("cidr=10.244.1.128/25").matches(&a));
        assert!(!Identifiers::parse("host=node-b&ipv4=10.0.0.6&cidr=10.244.2.0/24").matches(&a));
        assert!(!Identifiers::parse("default-route=true").matches(&a));
    }
}
