//! SIGTERM stops every task the daemon runs and waits for them: the
//! Konnectivity server's per-agent tasks, the admin server's connections
//! and the migration controller with its watchers are in the daemon's
//! task set (root -> server -> connection), are named in the shutdown log,
//! and none is left when the process exits.

use std::time::{Duration, Instant};

use sshbridge_migrate::NodePhase;
use sshbridge_tests::phase_of;
use tokio::io::AsyncWriteExt;

use crate::support::{konnectivity_setup, within};

/// The daemon's default `--drain-timeout`: the grace every task must stop in.
const GRACE: Duration = Duration::from_secs(25);

/// `count` in the daemon's `stopping N tasks: NAME xC, ...` line.
fn stopping_count(line: &str, name: &str) -> usize {
    let list = line.split_once(" tasks: ").map_or("", |(_, l)| l);
    list.split(", ")
        .find_map(|t| {
            t.trim()
                .strip_prefix(name)?
                .strip_prefix(" x")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn sigterm_with_an_agent_an_admin_connection_and_a_soak_leaves_no_task() -> anyhow::Result<()>
{
    within(120, async {
        let mut s = konnectivity_setup(1, &[], &[0], |k| k.migration.soak = "10m".into()).await?;
        let node = s.cluster.nodes[0].name.clone();
        s.bridge.migration_post("apply", "{}").await?;
        s.bridge
            .wait_for_migration("the node in soak", Duration::from_secs(60), |st| {
                phase_of(st, &node) == NodePhase::Soak
            })
            .await?;
        // An admin request whose body never completes keeps its
        // connection open (up to the request timeout, 30 s).
        let socket = s.bridge.config.admin_socket();
        let mut admin = tokio::net::UnixStream::connect(&socket).await?;
        admin
            .write_all(
                b"POST /migration/apply HTTP/1.1\r\nHost: localhost\r\n\
                  Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            )
            .await?;
        admin.flush().await?;
        let t0 = Instant::now();
        s.bridge.sigterm()?;
        let status = s.bridge.wait_exit(GRACE + Duration::from_secs(10)).await?;
        let took = t0.elapsed();
        let log = s.bridge.log();
        assert!(
            status.success(),
            "exit: {status}\n{}",
            s.bridge.log_tail(40)
        );
        assert!(
            took < GRACE,
            "exit took {took:?}, over the grace of {GRACE:?}"
        );
        let stopping = log
            .lines()
            .find(|l| l.contains("stopping ") && l.contains(" tasks: "))
            .unwrap_or_else(|| panic!("no `stopping N tasks` line:\n{}", s.bridge.log_tail(40)));
        for name in [
            "Konnectivity agent server",
            "Konnectivity agent accept loop",
            "Konnectivity agent stream",
            "admin server",
            "admin connection",
            "migration controller",
        ] {
            assert!(
                stopping_count(stopping, name) >= 1,
                "{name} is not in the daemon's task set: {stopping}"
            );
        }
        // The controller task and the node's soak watcher.
        assert!(
            log.contains("migration controller stopped with its watchers (2 tasks)"),
            "{}",
            s.bridge.log_tail(40)
        );
        assert!(
            log.contains("every task stopped: 0 tasks left") && !log.contains("tasks left running"),
            "tasks were left running at exit:\n{}",
            s.bridge.log_tail(40)
        );
        Ok(())
    })
    .await
}
