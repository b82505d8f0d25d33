//! The network-namespace lab: each node in a Linux network namespace of its
//! own, joined to the root namespace (where the bridge and the test run) by
//! a veth pair with a /30 from 10.231.0.0/16. That range exists only on
//! these veth pairs: the namespaces route nothing but 10.231.0.0/16, so no
//! test packet can leave the machine. Faults are nftables rules inside a
//! node's namespace ([`NodeNs::blackhole`], [`NodeNs::lose`]); delay is a
//! userspace relay ([`relay::Relay`]) since the kernel may lack `netem`.
//!
//! Namespaces are named `sbl<pid>x<n>`: the lab removes them on drop, and
//! [`Lab::new`] removes those of test processes that no longer run.
//! Needs root, `ip` (iproute2) and `nft` (nftables); `scripts/test`
//! installs both.

pub mod node;
pub mod procstat;
pub mod relay;
pub mod traffic;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

/// Prefix of every namespace the lab creates.
pub const PREFIX: &str = "sbl";
/// The lab's address range, 10.231.0.0/16, as its first two octets.
const RANGE: [u8; 2] = [10, 231];
/// /30 blocks in the range.
const BLOCKS: u32 = 1 << 14;
/// Name of the nftables table holding a node's faults.
const FAULT_TABLE: &str = "sbfault";

/// Next /30 block; starts at a pid-derived offset so two test processes
/// at once rarely meet (a clash is detected and skipped anyway).
static NEXT_BLOCK: AtomicU32 = AtomicU32::new(u32::MAX);
/// Next namespace number in this process.
static NEXT_NS: AtomicU32 = AtomicU32::new(0);

/// One node's namespace and its link to the root namespace.
#[derive(Debug, Clone)]
pub struct NodeNs {
    /// Namespace name (`ip netns exec NAME`).
    pub name: String,
    /// The veth end in the root namespace.
    pub root_if: String,
    /// The veth end inside the namespace.
    pub node_if: String,
    /// Address of `root_if`: how the namespace reaches the root namespace.
    pub root_ip: Ipv4Addr,
    /// Address of `node_if`: the node's address.
    pub node_ip: Ipv4Addr,
}

/// Namespaces made by one test; all removed on drop.
#[derive(Debug)]
pub struct Lab {
    namespaces: Vec<NodeNs>,
}

impl Lab {
    /// An empty lab, after removing namespaces left by dead test processes.
    pub fn new() -> anyhow::Result<Self> {
        which("ip", "iproute2")?;
        which("nft", "nftables")?;
        remove_stale();
        Ok(Lab {
            namespaces: Vec::new(),
        })
    }

    /// Creates a namespace with its veth pair, addresses and route.
    pub fn add_namespace(&mut self) -> anyhow::Result<NodeNs> {
        let pid = std::process::id();
        let n = NEXT_NS.fetch_add(1, Ordering::SeqCst);
        let (root_ip, node_ip) = free_block()?;
        let ns = NodeNs {
            name: format!("{PREFIX}{pid}x{n}"),
            root_if: format!("sb{pid}x{n}r"),
            node_if: format!("sb{pid}x{n}n"),
            root_ip,
            node_ip,
        };
        run("ip", &["netns", "add", &ns.name])?;
        // Recorded first, so a failure below still removes it.
        self.namespaces.push(ns.clone());
        let (r, n, name) = (&ns.root_if, &ns.node_if, &ns.name);
        let range = format!("{}.{}.0.0/16", RANGE[0], RANGE[1]);
        run(
            "ip",
            &[
                "link", "add", r, "type", "veth", "peer", "name", n, "netns", name,
            ],
        )?;
        run("ip", &["addr", "add", &format!("{root_ip}/30"), "dev", r])?;
        run("ip", &["link", "set", r, "up"])?;
        run("ip", &["-n", name, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "-n",
                name,
                "addr",
                "add",
                &format!("{node_ip}/30"),
                "dev",
                n,
            ],
        )?;
        run("ip", &["-n", name, "link", "set", n, "up"])?;
        // Only the lab's range; no default route out of the namespace.
        run(
            "ip",
            &[
                "-n",
                name,
                "route",
                "add",
                &range,
                "via",
                &root_ip.to_string(),
            ],
        )?;
        Ok(ns)
    }

    /// The namespace whose node address is `ip`.
    pub fn by_node_ip(&self, ip: std::net::IpAddr) -> Option<&NodeNs> {
        self.namespaces
            .iter()
            .find(|ns| std::net::IpAddr::V4(ns.node_ip) == ip)
    }

    /// Every namespace, in creation order.
    pub fn namespaces(&self) -> &[NodeNs] {
        &self.namespaces
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            remove_namespace(&ns.name);
        }
    }
}

impl NodeNs {
    /// Drops every packet on the node's link, both ways, without a reset:
    /// to the bridge the node falls silent.
    pub fn blackhole(&self) -> anyhow::Result<()> {
        self.set_fault("drop")
    }

    /// Drops `percent` % of the packets on the node's link, each way, at
    /// random.
    pub fn lose(&self, percent: u8) -> anyhow::Result<()> {
        self.set_fault(&format!("numgen random mod 100 < {percent} drop"))
    }

    /// Cuts the node's TCP traffic with `port` on the root side (the
    /// agent server, say) until [`NodeNs::heal`]: dropped both ways.
    pub fn cut_port(&self, port: u16) -> anyhow::Result<()> {
        self.set_rules(
            &format!("tcp sport {port} drop"),
            &format!("tcp dport {port} drop"),
        )
    }

    /// Destroys the namespace's TCP sockets connected to `port` (`ss -K`):
    /// the node's side forgets them. Under [`NodeNs::cut_port`] the reset
    /// it sends never arrives, so the other side is left half-open.
    pub fn forget_tcp(&self, port: u16) -> anyhow::Result<()> {
        let filter = format!(":{port}");
        run(
            "ip",
            &[
                "netns", "exec", &self.name, "ss", "-K", "dport", "=", &filter,
            ],
        )
        .map(drop)
    }

    /// Removes every fault.
    pub fn heal(&self) -> anyhow::Result<()> {
        self.nft(&format!(
            "add table inet {FAULT_TABLE}\ndelete table inet {FAULT_TABLE}\n"
        ))
    }

    fn set_fault(&self, rule: &str) -> anyhow::Result<()> {
        self.set_rules(rule, rule)
    }

    /// Puts `input` on what arrives on the node's link and `output` on
    /// what leaves by it, replacing earlier faults.
    fn set_rules(&self, input: &str, output: &str) -> anyhow::Result<()> {
        let i = &self.node_if;
        self.nft(&format!(
            "add table inet {FAULT_TABLE}\ndelete table inet {FAULT_TABLE}\n\
             table inet {FAULT_TABLE} {{\n\
             chain in {{ type filter hook input priority 0; policy accept; iifname \"{i}\" {input}; }}\n\
             chain out {{ type filter hook output priority 0; policy accept; oifname \"{i}\" {output}; }}\n\
             }}\n"
        ))
    }

    /// Runs an nft script inside the namespace, atomically.
    fn nft(&self, script: &str) -> anyhow::Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft (install nftables; scripts/test does)")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {} failed: {}\nscript:\n{script}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Binds a TCP listener on `addr` inside this namespace (the socket
    /// stays in the namespace; the test serves it from its own runtime).
    pub fn bind(&self, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
        let path = format!("/run/netns/{}", self.name);
        let std_listener = std::thread::spawn(move || -> anyhow::Result<std::net::TcpListener> {
            let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
            // SAFETY: setns(2) on a valid namespace fd; it only changes this
            // short-lived thread's network namespace.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns({path}): {}", std::io::Error::last_os_error());
            }
            let l = std::net::TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the bind thread panicked"))??;
        Ok(tokio::net::TcpListener::from_std(std_listener)?)
    }
}

/// Fails with the package to install when `program` is missing.
fn which(program: &str, package: &str) -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(program).is_file());
    if !found {
        bail!("{program} not found: install {package} (scripts/test does)");
    }
    Ok(())
}

/// Runs a command, failing with its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A /30 none of whose addresses the root namespace has: (root end, node end).
fn free_block() -> anyhow::Result<(Ipv4Addr, Ipv4Addr)> {
    let start = (std::process::id() % 2048) * 8;
    let _ = NEXT_BLOCK.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    let taken = run("ip", &["-4", "-o", "addr", "show"])?;
    for _ in 0..64 {
        let i = NEXT_BLOCK.fetch_add(1, Ordering::SeqCst) % BLOCKS;
        let base = i * 4;
        let at = |h: u32| {
            let v = base + h;
            Ipv4Addr::new(RANGE[0], RANGE[1], (v >> 8) as u8, (v & 0xff) as u8)
        };
        let (root, node) = (at(1), at(2));
        if !taken.contains(&format!(" {root}/")) && !taken.contains(&format!(" {node}/")) {
            return Ok((root, node));
        }
    }
    bail!("no free /30 in 10.231.0.0/16")
}

/// Kills what still runs in namespace `name` and deletes it (its veth pair
/// goes with it).
fn remove_namespace(name: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2); the pid runs in a namespace this lab made.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = run("ip", &["netns", "del", name]);
}

/// Removes lab namespaces whose test process is gone.
fn remove_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('x').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_namespace(name);
        }
    }
}
