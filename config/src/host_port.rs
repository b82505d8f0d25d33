//! Parsing [`HostPort`] from text outside the config (gRPC addresses,
//! command-line flags): one parser for `host:port` and `[v6]:port`.
//!
//! An IPv6 literal is written and read in brackets (`[::1]:443`); the host
//! is kept without them. Stricter checks that depend on where the text came
//! from (the config's IPv6 and port checks, the CONNECT head's character
//! set) stay with the caller.

use std::str::FromStr;

use crate::model::HostPort;

/// Why a text is not `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    /// No `:port` at the end.
    #[error("{0:?} has no port; expected host:port or [ipv6]:port")]
    NoPort(String),
    /// The port is not a number from 0 to 65535.
    #[error("{0:?} has an invalid port; expected host:port or [ipv6]:port")]
    BadPort(String),
    /// Empty host, an unclosed bracket, or an IPv6 literal without brackets.
    #[error("{0:?} has an invalid host; expected host:port or [ipv6]:port")]
    BadHost(String),
}

impl HostPort {
    /// `host` (without brackets) and `port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        HostPort {
            host: host.into(),
            port,
        }
    }

    /// Splits into host and port.
    pub fn into_parts(self) -> (String, u16) {
        (self.host, self.port)
    }
}

impl FromStr for HostPort {
    type Err = HostPortError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| HostPortError::NoPort(s.to_string()))?;
        let port = port
            .parse()
            .map_err(|_| HostPortError::BadPort(s.to_string()))?;
        let host = match host.strip_prefix('[') {
            Some(rest) => rest.strip_suffix(']'),
            None if host.contains(':') => None,
            None => Some(host),
        };
        match host {
            Some(h) if !h.is_empty() => Ok(HostPort::new(h, port)),
            _ => Err(HostPortError::BadHost(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_v4_and_bracketed_v6() {
        let hp: HostPort = "node-1.example:22".parse().unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("node-1.example", 22));
        let hp: HostPort = "[fd00::1]:10250".parse().unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("fd00::1", 10250));
        assert_eq!(hp.to_string(), "[fd00::1]:10250");
        assert_eq!(HostPort::new("10.0.0.1", 443).to_string(), "10.0.0.1:443");
    }

    #[test]
    fn refuses_what_is_not_host_port() {
        for bad in [
            "",
            "host",
            "host:",
            "host:x",
            "host:70000",
            ":80",
            "::1:80",
            "[::1:80",
            "[]:80",
        ] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad:?}");
        }
    }
}
