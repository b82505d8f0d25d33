//! The bridge under test: a real `sshbridge run` child process, its memory
//! and CPU from /proc, and its tunnel count from the admin API.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sshbridge_tests::{BridgeConfig, KonnectivityConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running `sshbridge run`. Dropping it kills the process.
pub struct Daemon {
    /// Its config (egress socket, admin socket).
    pub config: BridgeConfig,
    child: tokio::process::Child,
    pid: i32,
    log: PathBuf,
}

impl Daemon {
    /// Writes `config` and starts `bin run --config FILE`; logs at `warn`
    /// unless `BENCH_RUST_LOG` says otherwise (debug logs would cost the
    /// bridge more than the traffic it carries).
    pub async fn start(bin: &Path, config: BridgeConfig) -> anyhow::Result<Self> {
        Self::start_with(bin, config, None, &[]).await
    }

    /// [`Daemon::start`] with the Konnectivity sections of `konn` and extra
    /// environment variables (allocator knobs for diagnostic runs).
    pub async fn start_with(
        bin: &Path,
        config: BridgeConfig,
        konn: Option<&KonnectivityConfig>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let path = config.write_with(konn)?;
        let log = config.dir.join("sshbridge.log");
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let filter = std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into());
        let child = tokio::process::Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", filter)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the bridge exited at once")? as i32;
        Ok(Daemon {
            config,
            child,
            pid,
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Fails with the log tail if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(exit)) = self.child.try_wait() {
            bail!("the bridge exited with {exit}:\n{}", self.log_tail(30));
        }
        Ok(())
    }

    /// The egress unix socket.
    pub fn egress(&self) -> &Path {
        &self.config.uds
    }

    /// Resident set size now, bytes (`VmRSS`).
    pub fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("the bridge is gone")?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS in /proc/PID/status")?;
        Ok(kb * 1024)
    }

    /// `Anonymous` of /proc/PID/smaps_rollup, bytes: heap and stacks, the
    /// part of RSS an allocator can keep after the program freed it.
    pub fn anon(&self) -> anyhow::Result<u64> {
        let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.pid))
            .context("the bridge is gone")?;
        let kb: u64 = rollup
            .lines()
            .find_map(|l| l.strip_prefix("Anonymous:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no Anonymous in /proc/PID/smaps_rollup")?;
        Ok(kb * 1024)
    }

    /// CPU time used so far (user + system).
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        process_cpu(self.pid as u32).context("the bridge is gone")
    }

    /// `GET /metrics` on the admin socket.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let socket = self.config.admin_socket();
        let get = async {
            let mut s = tokio::net::UnixStream::connect(&socket).await?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&raw).into_owned())
        };
        tokio::time::timeout(Duration::from_secs(10), get)
            .await
            .context("admin /metrics timed out")?
            .with_context(|| format!("admin socket {}", socket.display()))
    }

    /// Tunnels up and sessions lost so far (`sshbridge_tunnels{state="up"}`
    /// and the sum of `sshbridge_reconnects_total`); zeros while the admin
    /// socket is not there yet.
    pub async fn tunnel_counts(&self) -> (usize, u64) {
        let Ok(text) = self.metrics().await else {
            return (0, 0);
        };
        let up = metric_sum(&text, "sshbridge_tunnels{state=\"up\"}");
        let lost = metric_sum(&text, "sshbridge_reconnects_total");
        (up as usize, lost as u64)
    }

    /// Polls until `n` tunnels are up and at least `lost` sessions were
    /// lost in all; returns how long that took from `since`. `ready` is a
    /// cheap pre-check (the farm's own count) so the bridge is not scraped
    /// more than needed. Fails after `within`, naming how many were up.
    pub async fn wait_all_up(
        &mut self,
        n: usize,
        lost: u64,
        since: Instant,
        within: Duration,
        ready: impl Fn() -> bool,
    ) -> anyhow::Result<Duration> {
        let mut seen = (0, 0);
        while since.elapsed() < within {
            self.check_running()?;
            if ready() {
                seen = self.tunnel_counts().await;
                if seen.0 >= n && seen.1 >= lost {
                    return Ok(since.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        bail!(
            "only {} of {n} tunnels up ({} of {lost} losses seen) after {within:?}; bridge log:\n{}",
            seen.0,
            seen.1,
            self.log_tail(30)
        )
    }

    /// The bridge's log lines that contain `needle`, joined; `None` if none.
    pub fn log_lines(&self, needle: &str) -> Option<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let found: Vec<String> = log
            .lines()
            .filter(|l| l.contains(needle))
            .map(strip_ansi)
            .collect();
        (!found.is_empty()).then(|| found.join("; "))
    }

    /// The last lines of the bridge's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the process and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Sum of every sample of `series` (a metric name, or a name with a full
/// label set) in Prometheus text.
pub fn metric_sum(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(series)?;
            let value = if rest.starts_with(' ') {
                rest
            } else if rest.starts_with('{') && !series.ends_with('}') {
                &rest[rest.rfind('}')? + 1..]
            } else {
                return None;
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

/// `line` without terminal colour codes (ESC [ ... m).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// CPU time process `pid` has used so far (user + system), from
/// `/proc/PID/stat`.
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    let rest = &stat[stat.rfind(')').context("bad /proc/PID/stat")? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_millis(ticks * 1000 / hz))
}

/// CPU time of process `pid` and every live process below it (sshd's
/// per-connection processes), from `/proc/*/stat`. A process that ended
/// in between is missing from the sum, so compare two readings only while
/// the same processes run.
pub fn tree_cpu(pid: u32) -> anyhow::Result<Duration> {
    let mut parent = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(p) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // Field 4 of stat(5), the second after the command's ')'.
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split(' ').nth(1))
            .and_then(|f| f.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.insert(p, ppid);
        }
    }
    let below = |mut p: u32| loop {
        if p == pid {
            return true;
        }
        match parent.get(&p) {
            Some(&up) if up != 0 && up != p => p = up,
            _ => return false,
        }
    };
    let mut total = Duration::ZERO;
    for &p in parent.keys() {
        if below(p) {
            // A process may end between the listing and this read.
            total += process_cpu(p).unwrap_or_default();
        }
    }
    Ok(total)
}
