//! How a follower learns that the record changed: a watch on the one
//! ConfigMap (`fieldSelector=metadata.name=NAME`), started at the first
//! [`KubeStore::changed`](super::KubeStore) call. Each event wakes the
//! follower, which then reads the record (one GET per change, instead of
//! one every 500 ms: at 5,000 nodes the record is about 360 KB).
//!
//! A watch that fails (no `watch` permission, the apiserver unreachable)
//! does not leave the follower blind: until an event arrives again the
//! follower reads every [`FOLLOW_EVERY`], as without a watch; while the
//! watch is healthy it still reads every [`RESYNC`] in case an event was
//! lost.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use sshbridge_migrate::FOLLOW_EVERY;
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

/// A read of the record even while the watch reports nothing.
pub(super) const RESYNC: Duration = Duration::from_secs(30);

/// What the watch task tells the follower.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Seen {
    /// Whether the watch is delivering events (false until its first
    /// list, and after an error).
    pub(super) healthy: bool,
}

/// The running watch; the task ends when the last clone is dropped.
#[derive(Clone)]
pub(super) struct Follow {
    rx: watch::Receiver<Seen>,
    _task: std::sync::Arc<AbortOnDropHandle<()>>,
}

impl Follow {
    /// Starts the watch of `api`'s object `name`.
    pub(super) fn start(api: Api<ConfigMap>, name: &str, object: String) -> Follow {
        let (tx, rx) = watch::channel(Seen::default());
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let task = tokio::spawn(run(api, config, tx, object));
        Follow {
            rx,
            _task: std::sync::Arc::new(AbortOnDropHandle::new(task)),
        }
    }

    /// Resolves on the next event (or one that came since the last call),
    /// or after [`RESYNC`] ([`FOLLOW_EVERY`] while the watch is broken).
    pub(super) async fn changed(&mut self) {
        let wait = if self.rx.borrow().healthy {
            RESYNC
        } else {
            FOLLOW_EVERY
        };
        let _ = tokio::time::timeout(wait, self.rx.changed()).await;
        self.rx.mark_unchanged();
    }
}

async fn run(
    api: Api<ConfigMap>,
    config: watcher::Config,
    tx: watch::Sender<Seen>,
    object: String,
) {
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut warned = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init | Event::InitApply(_)) => {}
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => {
                if warned {
                    tracing::info!(record = %object, "migration record watch works again");
                    warned = false;
                }
                tx.send_replace(Seen { healthy: true });
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(
                        record = %object,
                        error = %e,
                        "cannot watch the migration record; reading it every {FOLLOW_EVERY:?} \
                         instead; check that the bridge may list and watch it \
                         (sshbridge manifests rbac) and reach the apiserver"
                    );
                    warned = true;
                }
                tx.send_if_modified(|s| std::mem::replace(&mut s.healthy, false));
            }
        }
    }
}
