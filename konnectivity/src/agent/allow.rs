//! The agent's allow-list (`--allow CIDR:PORTS`): which targets it dials.
//!
//! Without a list the agent dials whatever the server asks, as upstream's
//! agent does. With one, a target is dialed only at resolved addresses that
//! fall inside one rule's CIDR with the port in that rule's ports; a host
//! name is resolved first and only its allowed addresses are tried.

use std::net::SocketAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// One `CIDR:PORTS` rule, e.g. `10.0.0.0/8:10250`, `10.244.0.0/16:1-65535`,
/// `fd00::/8:443,10250` or `192.168.1.0/24:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    net: IpNet,
    /// Inclusive port ranges.
    ports: Vec<(u16, u16)>,
}

/// Why an `--allow` value could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--allow {spec:?}: {what} (expected CIDR:PORTS, e.g. 10.0.0.0/8:10250,443 or fd00::/8:1-65535 or 10.0.0.5/32:*)")]
pub struct AllowParseError {
    spec: String,
    what: String,
}

impl AllowRule {
    /// Whether `addr` is inside this rule.
    pub fn allows(&self, addr: &SocketAddr) -> bool {
        let port = addr.port();
        self.net.contains(&addr.ip()) && self.ports.iter().any(|&(a, b)| a <= port && port <= b)
    }
}

impl FromStr for AllowRule {
    type Err = AllowParseError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |what: &str| AllowParseError {
            spec: spec.to_string(),
            what: what.to_string(),
        };
        // The prefix length never holds a colon, so the last colon splits
        // IPv6 CIDRs correctly too.
        let (cidr, ports) = spec.rsplit_once(':').ok_or_else(|| err("no ports"))?;
        if !cidr.contains('/') {
            return Err(err(
                "the address needs a prefix length (/32 for one IPv4 host)",
            ));
        }
        let net: IpNet = cidr
            .parse()
            .map_err(|e| err(&format!("bad CIDR {cidr:?}: {e}")))?;
        let mut ranges = Vec::new();
        for part in ports.split(',') {
            let part = part.trim();
            let range = if part == "*" {
                (1, u16::MAX)
            } else if let Some((a, b)) = part.split_once('-') {
                (port(a).map_err(|w| err(&w))?, port(b).map_err(|w| err(&w))?)
            } else {
                let p = port(part).map_err(|w| err(&w))?;
                (p, p)
            };
            if range.0 > range.1 {
                return Err(err(&format!("empty port range {part:?}")));
            }
            ranges.push(range);
        }
        Ok(AllowRule {
            net: net.trunc(),
            ports: ranges,
        })
    }
}

fn port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("bad port {s:?} (1-65535)")),
        Ok(p) => Ok(p),
    }
}

/// The rules of all `--allow` flags; empty means "dial anything".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<AllowRule>,
}

impl AllowList {
    /// A list of rules; an empty list allows everything.
    pub fn new(rules: Vec<AllowRule>) -> AllowList {
        AllowList { rules }
    }

    /// Whether the list restricts anything.
    pub fn is_restricted(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Whether the agent may dial `addr`.
    pub fn allows(&self, addr: &SocketAddr) -> bool {
        !self.is_restricted() || self.rules.iter().any(|r| r.allows(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rules_match_cidr_and_ports() {
        let r: AllowRule = "10.0.0.0/8:10250,443".parse().unwrap();
        assert!(r.allows(&sa("10.1.2.3:10250")));
        assert!(r.allows(&sa("10.1.2.3:443")));
        assert!(!r.allows(&sa("10.1.2.3:22")));
        assert!(!r.allows(&sa("11.0.0.1:443")));
        let r: AllowRule = "fd00::/8:1000-2000".parse().unwrap();
        assert!(r.allows(&sa("[fd00::5]:1500")));
        assert!(!r.allows(&sa("[fd00::5]:2001")));
        let r: AllowRule = "127.0.0.1/32:*".parse().unwrap();
        assert!(r.allows(&sa("127.0.0.1:1")));
        assert!(!r.allows(&sa("127.0.0.2:1")));
    }

    #[test]
    fn bad_rules_say_what_is_expected() {
        for bad in [
            "10.0.0.0/8",
            "10.0.0.5:80",
            "10.0.0.0/33:80",
            "10.0.0.0/8:0",
            "10.0.0.0/8:90-80",
            "10.0.0.0/8:http",
        ] {
            let e = bad.parse::<AllowRule>().unwrap_err().to_string();
            assert!(e.contains("expected CIDR:PORTS"), "{bad}: {e}");
        }
    }

    #[test]
    fn empty_list_allows_all_and_a_list_restricts() {
        assert!(AllowList::default().allows(&sa("192.0.2.1:9")));
        let l = AllowList::new(vec!["127.0.0.0/8:80".parse().unwrap()]);
        assert!(l.allows(&sa("127.0.0.9:80")));
        assert!(!l.allows(&sa("127.0.0.9:81")));
    }
}
