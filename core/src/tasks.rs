//! Named, tracked tasks: every task a daemon spawns is in one
//! [`TaskTracker`], so shutdown can wait for them and say, by name, which
//! did not stop in time.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;

use crate::lock;

/// A set of running tasks, each with a name. Cloning shares the set.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    names: Arc<Names>,
    /// The runtime this set's tasks are spawned on; `None`: the caller's.
    home: Option<Handle>,
}

#[derive(Default)]
struct Names {
    next: AtomicU64,
    live: Mutex<BTreeMap<u64, String>>,
}

/// Removes a task's name when the task ends (or is dropped unpolled).
struct Running {
    names: Arc<Names>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.names.live).remove(&self.id);
    }
}

pin_project_lite::pin_project! {
    /// A task and its name. A struct rather than an `async move` block
    /// that awaits the task: such a block stores the task's future twice
    /// (as the captured value and as the awaited one), which doubled the
    /// memory of every long-lived task, one per node and more.
    struct Named<F> {
        #[pin]
        task: F,
        running: Running,
    }
}

impl<F: Future> Future for Named<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().task.poll(cx).map(drop)
    }
}

impl Tasks {
    /// An empty set.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Spawns `task` under `name`, on this set's runtime ([`Tasks::on`]) or
    /// else on the current one.
    pub fn spawn<F>(&self, name: impl Into<String>, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let id = self.names.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.names.live).insert(id, name.into());
        let running = Running {
            names: self.names.clone(),
            id,
        };
        let task = Named { task, running };
        match &self.home {
            Some(home) => drop(self.tracker.spawn_on(task, home)),
            None => drop(self.tracker.spawn(task)),
        }
    }

    /// The same set, spawning on `home` (a runtime of its own, see the
    /// bridge's shards) instead of on the caller's runtime. Shutdown still
    /// waits for these tasks with the others.
    pub fn on(&self, home: Handle) -> Tasks {
        Tasks {
            home: Some(home),
            ..self.clone()
        }
    }

    /// The runtime this set spawns on, when it is not the caller's.
    pub fn home(&self) -> Option<&Handle> {
        self.home.as_ref()
    }

    /// Tasks running now.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether no task runs.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Names of the tasks running now, with how many run under each.
    pub fn running(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for name in lock(&self.names.live).values() {
            *out.entry(name.clone()).or_insert(0) += 1;
        }
        out
    }

    /// Takes no more tasks and waits up to `grace` for the running ones.
    /// Returns the names of those still running after it (empty when all
    /// ended).
    pub async fn close_and_wait(&self, grace: Duration) -> BTreeMap<String, usize> {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return BTreeMap::new();
        }
        self.running()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    #[tokio::test(start_paused = true)]
    async fn names_what_outlives_the_grace() {
        let tasks = Tasks::new();
        let stop = CancellationToken::new();
        for name in ["prober", "prober", "listener"] {
            let stop = stop.clone();
            tasks.spawn(name, async move { stop.cancelled().await });
        }
        tasks.spawn("stubborn", std::future::pending::<()>());
        assert_eq!(tasks.len(), 4);
        stop.cancel();
        let left = tasks.close_and_wait(Duration::from_secs(5)).await;
        assert_eq!(left, BTreeMap::from([("stubborn".to_string(), 1)]));
        assert_eq!(tasks.len(), 1);
    }

    #[test]
    fn a_named_task_is_as_large_as_its_future() {
        let big = [7u8; 4096];
        let task = async move {
            tokio::task::yield_now().await;
            std::hint::black_box(&big);
        };
        let inner = std::mem::size_of_val(&task);
        let running = Running {
            names: Arc::default(),
            id: 0,
        };
        let named = Named { task, running };
        assert!(inner >= 4096);
        assert!(std::mem::size_of_val(&named) <= inner + 64);
    }

    #[tokio::test(start_paused = true)]
    async fn empty_once_every_task_ended() {
        let tasks = Tasks::new();
        tasks.spawn("sleeper", tokio::time::sleep(Duration::from_secs(3)));
        let left = tasks.close_and_wait(Duration::from_secs(5)).await;
        assert!(left.is_empty());
        assert!(tasks.is_empty());
        assert!(tasks.running().is_empty());
    }
}
