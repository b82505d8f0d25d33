//! The threads the nodes' SSH sessions run on (`ssh.threads`).
//!
//! Each shard is a single-threaded runtime on a thread of its own. An SSH
//! session, the pumps of its streams and, for clients on the egress unix
//! socket, each stream's copy task all run on the session's shard, so a
//! stream's bytes go from task to task without waking another thread.
//! Sessions take the shards in turn, so many nodes (or a node's several
//! sessions) still use every core. On the work-stealing runtime a stream's three tasks woke each
//! other across threads, and switches and wake-ups took 23% of the
//! bridge's time in a one-stream profile (docs/bench.md).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::tasks::Tasks;

/// The shards; dropping this stops their threads (after the daemon's
/// shutdown has waited for their tasks).
pub(super) struct Shards {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
}

/// Why the shards could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start SSH session thread {index} of {count} (ssh.threads): {source}")]
pub struct ShardError {
    index: usize,
    count: usize,
    source: std::io::Error,
}

impl Shards {
    /// Starts `count` shards; 0 means one per CPU the process may use.
    pub(super) fn start(count: usize) -> Result<Shards, ShardError> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(count);
        for index in 0..count {
            let fail = |source| ShardError {
                index: index + 1,
                count,
                source,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(fail)?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("ssh-{}", index + 1))
                .spawn(move || runtime.block_on(stop.cancelled_owned()))
                .map_err(fail)?;
        }
        Ok(Shards {
            handles,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// `tasks`, spawning on the next shard in turn: for one SSH session.
    pub(super) fn next(&self, tasks: &Tasks) -> Tasks {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        tasks.on(self.handles[i].clone())
    }

    /// How many shards there are.
    pub(super) fn len(&self) -> usize {
        self.handles.len()
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_take_the_shards_in_turn_and_their_tasks_run_there() {
        let shards = Shards::start(2).expect("shards start");
        assert_eq!(shards.len(), 2);
        let tasks = Tasks::new();
        let mut threads = Vec::new();
        for _ in 0..3 {
            let session = shards.next(&tasks);
            let (tx, rx) = tokio::sync::oneshot::channel();
            session.spawn("probe", async move {
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
            });
            let ran = tokio::time::timeout(std::time::Duration::from_secs(5), rx);
            threads.push(ran.await.expect("within 5 s").expect("the task ran"));
        }
        let names: Vec<_> = threads.iter().map(|t| t.as_deref()).collect();
        assert_eq!(names, [Some("ssh-1"), Some("ssh-2"), Some("ssh-1")]);
        // The daemon's shutdown still sees and waits for them.
        let left = tasks
            .close_and_wait(std::time::Duration::from_secs(5))
            .await;
        assert!(left.is_empty(), "{left:?}");
    }
}
