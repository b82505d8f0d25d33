//! Parsers for the value syntaxes of the config: durations, sizes, CIDRs,
//! `host:port`, listen addresses, batch sizes, node names.
//!
//! Each returns a [`Problem`] that the validator pins to the value's position.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::model::{BatchSize, HostPort, Listen};
use crate::raw::StrOrInt;

/// What is wrong with a value, and optionally what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    fn new(message: impl Into<String>, hint: Option<String>) -> Self {
        Problem {
            message: message.into(),
            hint,
        }
    }
}

/// The longest `[migration] soak` (and `migrate apply --soak`) accepted:
/// seven days. Longer values are refused where they are parsed, so no
/// deadline computed from them can overflow.
pub const MAX_SOAK: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest value a duration key accepts. Keys not listed here get
/// [`MAX_DURATION_DEFAULT`]; every maximum is stated in the README's
/// configuration reference.
pub(crate) fn max_duration(key: &str) -> Duration {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 3600;
    let secs = match key {
        "migration.soak" => return MAX_SOAK,
        "ssh.certificate_warn_before" => 30 * 24 * HOUR,
        "egress.dial_timeout"
        | "egress.request_head_timeout"
        | "ssh.connect_timeout"
        | "konnectivity.tls_handshake_timeout"
        | "admin.tls_handshake_timeout"
        | "egress.tls_handshake_timeout"
        | "konnectivity.tokenreview.cache_ttl" => 10 * MINUTE,
        "ssh.keepalive_interval" | "ssh.backoff.initial" | "ssh.backoff.max" => HOUR,
        "health.interval" | "inventory.watch_grace" => HOUR,
        _ => return MAX_DURATION_DEFAULT,
    };
    Duration::from_secs(secs)
}

/// The longest value of a duration key without a maximum of its own: one
/// day.
pub(crate) const MAX_DURATION_DEFAULT: Duration = Duration::from_secs(24 * 3600);

/// A duration for `key`, refused above the key's maximum.
pub(crate) fn bounded_duration(key: &str, s: &str) -> Result<Duration, Problem> {
    let d = duration(s)?;
    let max = max_duration(key);
    if d > max {
        return Err(Problem::new(
            format!(
                "{} is longer than the maximum of {}",
                s.trim(),
                humantime::format_duration(max)
            ),
            Some(format!(
                "write at most \"{}\"",
                humantime::format_duration(max)
            )),
        ));
    }
    Ok(d)
}

/// `"500ms"`, `"10s"`, `"2m"`, `"1h 30m"`.
pub(crate) fn duration(s: &str) -> Result<Duration, Problem> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        Problem::new(
            format!("invalid duration {s:?}: {e}"),
            Some("write a number with a unit, e.g. \"500ms\", \"10s\", \"2m\"".into()),
        )
    })
}

/// `"4MiB"`, `"64KiB"`, `"8192"`, `8192`, `"1MB"`.
pub(crate) fn size(v: &StrOrInt) -> Result<u64, Problem> {
    let hint =
        || Some("write bytes as an integer or with a unit, e.g. 8192, \"64KiB\", \"4MiB\"".into());
    let s = match v {
        StrOrInt::Int(n) => {
            return u64::try_from(*n)
                .map_err(|_| Problem::new(format!("size {n} is negative"), hint()))
        }
        StrOrInt::Str(s) => s.trim(),
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = (&s[..split], s[split..].trim());
    let n: u64 = digits
        .parse()
        .map_err(|_| Problem::new(format!("invalid size {s:?}"), hint()))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(Problem::new(
                format!("invalid size {s:?}: unknown unit {unit:?}"),
                Some("units are B, KiB, MiB, GiB (or KB, MB, GB)".into()),
            ))
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| Problem::new(format!("size {s:?} is too large"), None))
}

/// A network in CIDR notation whose host bits are zero.
pub(crate) fn cidr(s: &str) -> Result<IpNet, Problem> {
    let net: IpNet = match s.trim().parse() {
        Ok(net) => net,
        Err(_) => {
            let hint = match s.trim().parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => format!("add a prefix length, e.g. \"{s}/32\""),
                Ok(IpAddr::V6(_)) => format!("add a prefix length, e.g. \"{s}/128\""),
                Err(_) => "write an address and a prefix length, e.g. \"10.244.1.0/24\"".into(),
            };
            return Err(Problem::new(format!("invalid CIDR {s:?}"), Some(hint)));
        }
    };
    if net.trunc() != net {
        return Err(Problem::new(
            format!("{s} has host bits set"),
            Some(format!("did you mean {}?", net.trunc())),
        ));
    }
    Ok(net)
}

/// `host:port` or `[v6]:port`.
pub(crate) fn host_port(s: &str) -> Result<HostPort, Problem> {
    let bad = |why: &str| {
        Problem::new(
            format!("invalid address {s:?}: {why}"),
            Some(
                "write host:port, e.g. \"203.0.113.5:22\", or [v6]:port, e.g. \"[2001:db8::5]:22\""
                    .into(),
            ),
        )
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, rest) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("the part in brackets is not an IPv6 address"));
        }
        let port = rest
            .strip_prefix(':')
            .ok_or_else(|| bad("missing ':port'"))?;
        (host, port)
    } else {
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("missing ':port'"))?;
        if host.contains(':') {
            return Err(bad("an IPv6 host must be in brackets"));
        }
        (host, port)
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad("the host is empty or contains spaces or '/'"));
    }
    let port = port_number(port).map_err(|_| bad("the port must be 1..=65535"))?;
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

fn port_number(s: &str) -> Result<u16, ()> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(()),
        Ok(p) => Ok(p),
    }
}

/// A TCP port number, 1..=65535.
pub(crate) fn port(n: i64) -> Result<u16, Problem> {
    match u16::try_from(n) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(Problem::new(
            format!("port {n} is out of range"),
            Some("ports are 1..=65535".into()),
        )),
    }
}

/// An `ip:port` socket address (port 0 is refused: listeners need a fixed
/// address that clients are configured with).
pub(crate) fn socket_addr(s: &str) -> Result<SocketAddr, Problem> {
    match s.trim().parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a),
        Ok(_) => Err(Problem::new(
            format!("listen address {s:?} has port 0"),
            Some("pick a fixed port that clients can be configured with".into()),
        )),
        Err(_) => Err(Problem::new(
            format!("invalid listen address {s:?}"),
            Some("write ip:port, e.g. \"127.0.0.1:8131\" or \"[::1]:8131\"".into()),
        )),
    }
}

/// `unix:/abs/path` or `ip:port`.
pub(crate) fn listen(s: &str) -> Result<Listen, Problem> {
    if let Some(path) = s.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(Problem::new(
                format!("unix socket path in {s:?} is not absolute"),
                Some("write unix:/abs/path, e.g. \"unix:/run/sshbridge/admin.sock\"".into()),
            ));
        }
        return Ok(Listen::Unix(path));
    }
    socket_addr(s).map(Listen::Tcp).map_err(|p| Problem {
        hint: Some("write \"unix:/abs/path\" or ip:port, e.g. \"127.0.0.1:8133\"".into()),
        ..p
    })
}

/// A node count (`3`, `"3"`) or a percentage (`"10%"`, 0 < N <= 100).
pub(crate) fn batch_size(v: &StrOrInt) -> Result<BatchSize, Problem> {
    let hint = || Some("write a node count such as 2, or a percentage such as \"10%\"".into());
    let count = |n: i64| match usize::try_from(n) {
        Ok(n) if n > 0 => Ok(BatchSize::Count(n)),
        _ => Err(Problem::new(
            format!("batch_size {n} must be at least 1"),
            hint(),
        )),
    };
    match v {
        StrOrInt::Int(n) => count(*n),
        StrOrInt::Str(s) => {
            let s = s.trim();
            if let Some(p) = s.strip_suffix('%') {
                match p.trim().parse::<f64>() {
                    Ok(p) if p > 0.0 && p <= 100.0 => Ok(BatchSize::Percent(p)),
                    _ => Err(Problem::new(
                        format!("batch_size {s:?} must be a percentage above 0% and at most 100%"),
                        hint(),
                    )),
                }
            } else {
                match s.parse::<i64>() {
                    Ok(n) => count(n),
                    Err(_) => Err(Problem::new(format!("invalid batch_size {s:?}"), hint())),
                }
            }
        }
    }
}

/// Whether `s` is a DNS-1123 subdomain, as Kubernetes requires of node names.
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    !s.is_empty() && s.len() <= 253 && s.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(size(&StrOrInt::Str("4MiB".into())), Ok(4 << 20));
        assert_eq!(size(&StrOrInt::Str("64KiB".into())), Ok(64 << 10));
        assert_eq!(size(&StrOrInt::Str("8192".into())), Ok(8192));
        assert_eq!(size(&StrOrInt::Int(8192)), Ok(8192));
        assert!(size(&StrOrInt::Str("4 parsecs".into())).is_err());
        assert!(size(&StrOrInt::Int(-1)).is_err());
    }

    #[test]
    fn cidr_host_bits_suggest_network() {
        let p = cidr("10.0.0.5/24").unwrap_err();
        assert_eq!(p.message, "10.0.0.5/24 has host bits set");
        assert_eq!(p.hint.as_deref(), Some("did you mean 10.0.0.0/24?"));
        assert_eq!(cidr("fd00::/64").unwrap().to_string(), "fd00::/64");
        assert!(cidr("10.0.0.1").unwrap_err().hint.unwrap().contains("/32"));
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            host_port("[2001:db8::5]:2222").unwrap().to_string(),
            "[2001:db8::5]:2222"
        );
        assert_eq!(
            host_port("bastion.example:22").unwrap().host,
            "bastion.example"
        );
        assert!(host_port("2001:db8::5:22").is_err());
        assert!(host_port("10.0.0.5").is_err());
        assert!(host_port("10.0.0.5:0").is_err());
    }

    #[test]
    fn listen_forms() {
        assert_eq!(
            listen("unix:/run/a.sock"),
            Ok(Listen::Unix("/run/a.sock".into()))
        );
        assert!(matches!(listen("127.0.0.1:8133"), Ok(Listen::Tcp(_))));
        assert!(listen("unix:run/a.sock").is_err());
        assert!(listen("localhost:8133").is_err());
    }

    #[test]
    fn batch_sizes() {
        assert_eq!(
            batch_size(&StrOrInt::Str("10%".into())),
            Ok(BatchSize::Percent(10.0))
        );
        assert_eq!(batch_size(&StrOrInt::Int(3)), Ok(BatchSize::Count(3)));
        assert!(batch_size(&StrOrInt::Str("0%".into())).is_err());
        assert!(batch_size(&StrOrInt::Str("101%".into())).is_err());
        assert!(batch_size(&StrOrInt::Int(0)).is_err());
    }

    #[test]
    fn durations_are_bounded_per_key() {
        assert_eq!(
            bounded_duration("migration.soak", "7d"),
            Ok(Duration::from_secs(7 * 86400))
        );
        let p = bounded_duration("migration.soak", "10000000000000000000s").unwrap_err();
        assert!(
            p.message.contains("longer than the maximum of 7days"),
            "{p:?}"
        );
        let p = bounded_duration("migration.soak", "8d").unwrap_err();
        assert_eq!(p.message, "8d is longer than the maximum of 7days");
        assert!(bounded_duration("ssh.connect_timeout", "10m").is_ok());
        assert!(bounded_duration("ssh.connect_timeout", "11m").is_err());
        assert!(bounded_duration("health.interval", "2h").is_err());
        assert!(bounded_duration("some.future_key", "1d").is_ok());
        assert!(bounded_duration("some.future_key", "25h").is_err());
        // Every bound is far from what Instant arithmetic can overflow on.
        for key in ["migration.soak", "ssh.backoff.max", "x"] {
            let max = max_duration(key);
            assert!(std::time::Instant::now().checked_add(max * 1000).is_some());
        }
    }

    #[test]
    fn node_names() {
        assert!(is_dns1123_subdomain("node-a.zone-1"));
        assert!(!is_dns1123_subdomain("Node_A"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(!is_dns1123_subdomain("a..b"));
    }
}
