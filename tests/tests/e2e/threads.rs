//! The bridge's threads: a node's SSH work runs on the SSH threads
//! (`ssh.threads`), not on the work-stealing runtime's workers.

use rand::RngCore;
use sshbridge_tests::{Bridge, Cluster};

use crate::streams::one_stream;
use crate::support::within;

const MIB: usize = 1024 * 1024;

/// CPU ticks (user + system) of each thread of `pid`, by thread name.
fn thread_ticks(pid: u32) -> anyhow::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("stat"))?;
        // `pid (comm) state ...`: the name may hold spaces, so split at
        // the last ')'; utime and stime are fields 14 and 15.
        let (head, rest) = stat
            .rsplit_once(')')
            .ok_or_else(|| anyhow::anyhow!("odd stat line: {stat}"))?;
        let name = head.split_once('(').map_or("", |(_, n)| n).to_string();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        out.push((name, ticks));
    }
    Ok(out)
}

/// With `ssh.threads = 2`, the bridge runs two SSH threads, and a bulk
/// stream spends its CPU (the cipher, mostly) on them, not on the
/// work-stealing runtime's workers: the node's session runs on its own
/// thread (docs/architecture.md, "Threads"). That the client's copy moves
/// there too is `a_unix_client_moves_to_its_paths_runtime_and_its_bytes_follow`
/// (bridge/src/egress/http_connect.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_stream_runs_on_its_nodes_ssh_thread() -> anyhow::Result<()> {
    within(120, async {
        let cluster = Cluster::builder().nodes(2).build().await?;
        let mut config = cluster.bridge_config()?;
        config.extra_ssh_lines.push("threads = 2".into());
        let bridge = Bridge::start(config, Some(&cluster.nodes[0].kubelet_target())).await?;
        let pid = bridge.pid().expect("the bridge runs");
        let before = thread_ticks(pid)?;
        let mut names: Vec<&str> = before
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.starts_with("ssh-"))
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["ssh-1", "ssh-2"], "threads: {before:?}");

        let mut data = vec![0u8; 16 * MIB];
        rand::thread_rng().fill_bytes(&mut data);
        let node = &cluster.nodes[0];
        one_stream(bridge.egress(), node.echo.addr().to_string(), data, true).await?;

        let after = thread_ticks(pid)?;
        let spent = |prefix: &str| -> u64 {
            after
                .iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .map(|(n, t)| {
                    let was = before.iter().find(|(b, _)| b == n).map_or(0, |(_, t)| *t);
                    t.saturating_sub(was)
                })
                .sum()
        };
        let (ssh, workers) = (spent("ssh-"), spent("tokio-runtime-w"));
        // 32 MiB through the cipher: 16-17 ticks of 10 ms on the SSH
        // threads in a debug build, 0 on the workers (accept, the head).
        assert!(
            ssh >= 10 && ssh > 3 * workers,
            "CPU ticks: ssh threads {ssh}, runtime workers {workers}: {after:?}"
        );
        Ok(())
    })
    .await
}
