//! Stopping the daemon: stop accepting, drain open streams within the
//! grace, then cancel every task and wait for them.

use std::time::Duration;

use tracing::{info, warn};

use super::Daemon;

impl Daemon {
    /// Stops accepting, lets open streams finish for up to the drain grace,
    /// then cuts what is left and closes every tunnel.
    pub async fn shutdown(self) {
        self.life.stop_accepting.cancel();
        self.life.tracker.close();
        // Tunnels take no new streams either: those without open streams
        // close now (their sshd sessions end at once), the others once
        // theirs end. The admin API keeps answering meanwhile.
        for node in self.shared.snapshot().nodes.values() {
            let tunnel = node.tunnel.clone();
            self.drains.spawn(async move { tunnel.drain().await });
        }
        let open = self.life.tracker.len();
        if open > 0 {
            info!(open, grace = ?self.drain_grace, "draining open streams");
        }
        if tokio::time::timeout(self.drain_grace, self.life.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                left = self.life.tracker.len(),
                "drain grace over; cutting the remaining streams"
            );
            self.life.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.life.tracker.wait()).await;
        }
        self.drains.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.drains.wait()).await;
        let running: Vec<String> = (self.tasks.running().iter())
            .map(|(n, c)| format!("{n} x{c}"))
            .collect();
        info!(
            "stopping {} tasks: {}",
            self.tasks.len(),
            running.join(", ")
        );
        self.root.cancel();
        let left = self.tasks.close_and_wait(self.drain_grace).await;
        if left.is_empty() {
            info!("every task stopped: 0 tasks left");
        } else {
            let names: Vec<String> = left.iter().map(|(n, c)| format!("{n} x{c}")).collect();
            warn!(
                "{} tasks left running at exit (did not stop within {:?}): {}",
                left.values().sum::<usize>(),
                self.drain_grace,
                names.join(", ")
            );
        }
    }
}
