//! Rows 5 and 6: a farm of in-process SSH servers (`sim::sshd::SimSshd`)
//! on many loopback addresses in front of one real `sshbridge run`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use sshbridge_sim::keys;
use sshbridge_sim::sshd::{SimSshd, SimSshdConfig};
use sshbridge_tests::{net, NodeEntry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::daemon::Daemon;
use crate::memory;
use crate::report::{Goal, On, Row};
use crate::ssh_path::bridge_config;

/// Bound on "all tunnels up" (cold or after the storm).
const ALL_UP: Duration = Duration::from_secs(120);

/// N simulated nodes, each a `SimSshd` on its own 127.x address (also
/// the inventory group's nodes).
pub struct Farm {
    config: Vec<SimSshdConfig>,
    /// Where each node's SSH server listens.
    pub addrs: Vec<SocketAddr>,
    servers: Vec<SimSshd>,
    stop: CancellationToken,
}

impl Farm {
    /// `template` gives the host key and the authorized client key.
    pub async fn start(n: usize, template: &SimSshdConfig) -> anyhow::Result<Self> {
        let mut farm = Farm {
            config: Vec::new(),
            addrs: Vec::new(),
            servers: Vec::new(),
            stop: CancellationToken::new(),
        };
        let mut block = net::block();
        for i in 0..n {
            if i > 0 && i % 250 == 0 {
                block = net::block();
            }
            let ip = net::host(block, (i % 250 + 1) as u8);
            let mut config = template.clone();
            config.allow = vec![format!("{ip}/32").parse()?];
            config.name = format!("sim-{i}");
            let listener = TcpListener::bind((ip, 0))
                .await
                .with_context(|| format!("bind {ip}:0 (raise ulimit -n?)"))?;
            farm.addrs.push(listener.local_addr()?);
            farm.servers
                .push(SimSshd::start(listener, config.clone(), farm.stop.clone()));
            farm.config.push(config);
        }
        Ok(farm)
    }

    /// One known_hosts line per node (`[ip]:port KEY`).
    pub fn known_hosts(&self) -> String {
        let key = self.config[0].host_key.public_key();
        self.addrs
            .iter()
            .map(|a| keys::known_hosts_line(&a.ip().to_string(), a.port(), key) + "\n")
            .collect()
    }

    fn entries(&self) -> Vec<NodeEntry> {
        self.addrs
            .iter()
            .enumerate()
            .map(|(i, a)| NodeEntry {
                name: format!("sim-{i}"),
                address: a.ip(),
                ssh_address: *a,
                pod_cidrs: Vec::new(),
            })
            .collect()
    }

    /// Every node drops every connection at once, then listens again on
    /// the same address and port.
    async fn storm(&mut self) -> anyhow::Result<()> {
        let mut set = tokio::task::JoinSet::new();
        for s in self.servers.drain(..) {
            set.spawn(s.shutdown());
        }
        tokio::time::timeout(Duration::from_secs(30), async {
            while set.join_next().await.is_some() {}
        })
        .await
        .context("the farm did not stop within 30 s")?;
        for (addr, config) in self.addrs.iter().zip(&self.config) {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("re-bind {addr}"))?;
            self.servers
                .push(SimSshd::start(listener, config.clone(), self.stop.clone()));
        }
        Ok(())
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Farm {
    /// Connections the farm is serving right now (handshaking or up).
    pub fn active(&self) -> u64 {
        self.active_on(0..self.servers.len())
    }

    /// Connections the nodes `nodes` (indexes) are serving right now.
    pub fn active_on(&self, nodes: std::ops::Range<usize>) -> u64 {
        self.servers[nodes]
            .iter()
            .map(|s| s.stats().connections_active)
            .sum()
    }
}

/// What one scale run does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Node counts, smallest first.
    pub sizes: Vec<usize>,
    /// How long idle CPU is sampled.
    pub idle_window: Duration,
    /// Concurrent streams of the memory-under-load row (on the first size).
    pub streams: usize,
}

/// The bridge's client key (written to `dir/id_ed25519`, whose path is
/// returned) and a farm template with a fresh host key that authorizes it.
pub fn farm_keys(dir: &Path) -> anyhow::Result<(PathBuf, SimSshdConfig)> {
    std::fs::create_dir_all(dir)?;
    let client = keys::generate_ed25519();
    let identity = dir.join("id_ed25519");
    keys::write_private_key(&identity, &client)?;
    let template = SimSshdConfig {
        host_key: keys::generate_ed25519(),
        authorized: vec![client.public_key().clone()],
        allow: Vec::new(),
        name: String::new(),
    };
    Ok((identity, template))
}

/// Runs rows 5 and 6.
pub async fn run(bin: &Path, dir: &Path, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let (identity, template) = farm_keys(dir)?;
    // A one-node bridge: the fixed cost that per-tunnel numbers exclude.
    let base = {
        let farm = Farm::start(1, &template).await?;
        let (mut bridge, _) = start_bridge(bin, &dir.join("base"), &identity, &farm).await?;
        bridge
            .wait_all_up(1, 0, Instant::now(), ALL_UP, || true)
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = bridge.rss()?;
        bridge.stop().await;
        rss
    };
    let mut rows = Vec::new();
    for (k, &n) in plan.sizes.iter().enumerate() {
        let sub = dir.join(format!("n{n}"));
        let farm = Farm::start(n, &template).await?;
        let (mut bridge, t0) = start_bridge(bin, &sub, &identity, &farm).await?;
        let cold = bridge
            .wait_all_up(n, 0, t0, ALL_UP, || farm.active() >= n as u64)
            .await?;
        // Let handshake buffers and the first scrape's allocations settle.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = bridge.rss()?;
        let per = rss.saturating_sub(base) as f64 / n as f64 / 1024.0;
        let g = "scale ssh";
        rows.push(
            Row::new(g, &format!("idle RSS per tunnel, N={n}"), "KiB", per)
                .target(Goal::AtMost, On::Value, 48.0)
                .note(&format!(
                    "bridge RSS {:.1} MiB with {n} tunnels up, {:.1} MiB with 1",
                    mib(rss),
                    mib(base)
                )),
        );
        rows.push(
            Row::new(
                g,
                &format!("all up from cold, N={n}"),
                "s",
                cold.as_secs_f64(),
            )
            .target(Goal::AtMost, On::Value, 60.0),
        );
        let (c0, w0) = (bridge.cpu()?, Instant::now());
        tokio::time::sleep(plan.idle_window).await;
        let (c1, w1) = (bridge.cpu()?, Instant::now());
        let cpu = (c1 - c0).as_secs_f64() / (w1 - w0).as_secs_f64() * 100.0;
        rows.push(
            Row::new(g, &format!("idle CPU, keepalives 5s, N={n}"), "% core", cpu).note(&format!(
                "sampled over {:?} from /proc/PID/stat (10 ms ticks: resolution {:.2}%)",
                plan.idle_window,
                1.0 / plan.idle_window.as_secs_f64()
            )),
        );
        if k == 0 && plan.streams > 0 {
            let ips: Vec<_> = farm.addrs.iter().map(|a| a.ip()).collect();
            rows.extend(memory::under_load(&bridge, &ips, plan.streams, "", true).await?);
        }
        let (_, lost) = bridge.tunnel_counts().await;
        let mut farm = farm;
        let t = Instant::now();
        farm.storm().await?;
        let back = bridge
            .wait_all_up(n, lost + n as u64, t, ALL_UP, || farm.active() >= n as u64)
            .await?;
        rows.push(
            Row::new(
                g,
                &format!("back after storm, N={n}"),
                "s",
                back.as_secs_f64(),
            )
            .target(Goal::AtMost, On::Value, 60.0)
            .note("every node drops every connection at once, then listens again"),
        );
        bridge.stop().await;
        if k == 0 && plan.streams > 0 {
            for (i, env) in MALLOC_ENVS.iter().enumerate() {
                let sub = sub.join(format!("malloc-{i}"));
                rows.extend(
                    allocator_diagnostic(bin, &sub, &identity, &farm, plan.streams, env).await?,
                );
            }
        }
    }
    Ok(rows)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn start_bridge(
    bin: &Path,
    dir: &Path,
    identity: &Path,
    farm: &Farm,
) -> anyhow::Result<(Daemon, Instant)> {
    std::fs::create_dir_all(dir)?;
    let kh = dir.join("known_hosts");
    std::fs::write(&kh, farm.known_hosts())?;
    let config = bridge_config(
        &dir.join("bridge"),
        identity.to_path_buf(),
        kh,
        10250,
        farm.entries(),
    )?;
    let t0 = Instant::now();
    Ok((Daemon::start(bin, config).await?, t0))
}

/// glibc knobs for the diagnostic runs: (1) two arenas instead of up to 8
/// per core, and free memory at the top of a heap returned at once; (2) a
/// fixed mmap threshold, so blocks of 64 KiB and more are mmapped and
/// unmapped on free (glibc otherwise raises the threshold after the first
/// such free and serves later big blocks from its heaps).
const MALLOC_ENVS: [&[(&str, &str)]; 2] = [
    &[("MALLOC_ARENA_MAX", "2"), ("MALLOC_TRIM_THRESHOLD_", "0")],
    &[("MALLOC_MMAP_THRESHOLD_", "65536")],
];

/// Row 6 again on a fresh bridge for the same farm, run with the glibc
/// knobs `env`: if RSS after the streams close falls back with these, the
/// memory the default run keeps is the allocator's, not the bridge's.
async fn allocator_diagnostic(
    bin: &Path,
    dir: &Path,
    identity: &Path,
    farm: &Farm,
    streams: usize,
    env: &[(&str, &str)],
) -> anyhow::Result<Vec<Row>> {
    std::fs::create_dir_all(dir)?;
    let kh = dir.join("known_hosts");
    std::fs::write(&kh, farm.known_hosts())?;
    let config = bridge_config(
        &dir.join("bridge"),
        identity.to_path_buf(),
        kh,
        10250,
        farm.entries(),
    )?;
    let t0 = Instant::now();
    let mut bridge = Daemon::start_with(bin, config, None, env).await?;
    let n = farm.addrs.len();
    bridge.wait_all_up(n, 0, t0, ALL_UP, || true).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ips: Vec<_> = farm.addrs.iter().map(|a| a.ip()).collect();
    let names: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let label = format!(" diag, {}", names.join(" "));
    let rows = memory::under_load(&bridge, &ips, streams, &label, false).await?;
    bridge.stop().await;
    Ok(rows)
}
