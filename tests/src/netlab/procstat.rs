//! What a process holds, from /proc: open file descriptors, resident
//! memory and threads. For leak checks on the bridge.

use anyhow::Context;

/// A sample of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Entries of `/proc/PID/fd`.
    pub fds: usize,
    /// `VmRSS` in KiB.
    pub rss_kib: u64,
    /// `Threads`.
    pub threads: u64,
}

impl ProcStat {
    /// Samples process `pid`.
    pub fn of(pid: u32) -> anyhow::Result<ProcStat> {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .with_context(|| format!("reading /proc/{pid}/fd"))?
            .count();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))
        };
        Ok(ProcStat {
            fds,
            rss_kib: field("VmRSS:")?,
            threads: field("Threads:")?,
        })
    }
}
