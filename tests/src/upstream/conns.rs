//! Connection counts of the processes and servers in a test, so a test can
//! say "nothing was left open": the sockets a child process holds
//! (`/proc/PID/fd`) and the TCP connections a server address has
//! (`/proc/net/tcp`, `/proc/net/tcp6`, not counting LISTEN and TIME_WAIT).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Open socket descriptors of process `pid` (TCP, UDP and unix).
pub fn socket_fds(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count()
}

/// TCP connections whose local end is `addr` (a server's accepted
/// connections), in any state but LISTEN and TIME_WAIT.
pub fn tcp_conns(addr: SocketAddr) -> usize {
    let file = if addr.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let Ok(table) = std::fs::read_to_string(file) else {
        return 0;
    };
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // st: 06 TIME_WAIT, 0A LISTEN.
            cols.len() > 3 && !matches!(cols[3], "06" | "0A") && parse_addr(cols[1]) == Some(addr)
        })
        .count()
}

/// `0100007F:1F90` (and the 32-hex-digit IPv6 form) as the kernel prints it.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, word) in bytes.chunks_exact_mut(4).enumerate() {
                let w = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                word.copy_from_slice(&w.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Something whose connections a test counts.
#[derive(Debug, Clone)]
pub enum Probe {
    /// Socket descriptors of a process.
    Process {
        /// For messages.
        name: String,
        /// Its pid.
        pid: u32,
    },
    /// Accepted TCP connections of a server address.
    Server {
        /// For messages.
        name: String,
        /// Its listen address.
        addr: SocketAddr,
    },
}

impl Probe {
    /// A process probe.
    pub fn process(name: &str, pid: u32) -> Self {
        Probe::Process {
            name: name.to_string(),
            pid,
        }
    }

    /// A server-address probe.
    pub fn server(name: &str, addr: SocketAddr) -> Self {
        Probe::Server {
            name: name.to_string(),
            addr,
        }
    }

    fn name(&self) -> &str {
        match self {
            Probe::Process { name, .. } | Probe::Server { name, .. } => name,
        }
    }

    fn count(&self) -> usize {
        match self {
            Probe::Process { pid, .. } => socket_fds(*pid),
            Probe::Server { addr, .. } => tcp_conns(*addr),
        }
    }
}

/// One reading of every probe.
#[derive(Debug, Clone)]
pub struct Counts {
    probes: Vec<Probe>,
    values: Vec<usize>,
}

impl Counts {
    /// Reads every probe now.
    pub fn take(probes: &[Probe]) -> Self {
        Counts {
            probes: probes.to_vec(),
            values: probes.iter().map(Probe::count).collect(),
        }
    }

    /// The count of the probe called `name`.
    pub fn get(&self, name: &str) -> Option<usize> {
        let i = self.probes.iter().position(|p| p.name() == name)?;
        Some(self.values[i])
    }

    /// Whether every count is at most this reading's.
    fn covers(&self, now: &Counts) -> bool {
        self.values.iter().zip(&now.values).all(|(b, n)| n <= b)
    }

    /// Polls until every probe is back at (or below) this baseline, at most
    /// `within`; returns how long that took, or an error that shows both
    /// readings.
    pub async fn wait_back(&self, within: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let mut now = Counts::take(&self.probes);
        while !self.covers(&now) {
            if start.elapsed() >= within {
                anyhow::bail!(
                    "connections still open after {within:?}: baseline {self}, now {now}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            now = Counts::take(&self.probes);
        }
        Ok(start.elapsed())
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .probes
            .iter()
            .zip(&self.values)
            .map(|(p, v)| format!("{}={v}", p.name()))
            .collect();
        write!(f, "[{}]", parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_addresses_parse() {
        assert_eq!(
            parse_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn a_server_connection_is_counted_until_closed() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let base = Counts::take(&[Probe::server("s", addr)]);
        assert_eq!(base.get("s"), Some(0));
        let c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        assert_eq!(tcp_conns(addr), 1);
        assert!(base.wait_back(Duration::from_millis(200)).await.is_err());
        drop(s);
        drop(c);
        // The side that closed first goes to TIME_WAIT, which is not counted.
        base.wait_back(Duration::from_secs(5)).await.unwrap();
    }
}
