//! The Node watch: kube-rs' [`watcher`] (list, then watch from the listed
//! resourceVersion; after an error it watches again from the last
//! resourceVersion it saw, and relists only when the apiserver answers 410
//! Gone), retried with jittered exponential backoff, its changes published
//! as whole inventories at most every [`BATCH`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node as KubeNode;
use kube::api::{Api, ListParams};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use sshbridge_config::Inventory;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{found, Discovered};

/// Longest a change waits to be published after the previous publication:
/// a burst of changes becomes one new inventory (one reload) per batch.
pub const BATCH: Duration = Duration::from_millis(150);
/// First retry delay of a failed watch.
const RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest retry delay: the watch resumes within this of the apiserver's
/// return.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often a failing watch checks whether the apiserver answers again.
const RECHECK: Duration = Duration::from_secs(1);

/// One published inventory.
pub type Published = Arc<Discovered>;

/// How the watch is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchStatus {
    /// The first full list has arrived (before that nothing is published).
    pub synced: bool,
    /// When the API last answered the watch (a listed set or an event),
    /// or a failing watch's check found the apiserver back.
    pub last_sync: Option<SystemTime>,
    /// Since when the watch fails; `None` while it works.
    pub failing_since: Option<SystemTime>,
    /// The last error, naming the apiserver; kept after recovery.
    pub last_error: Option<String>,
    /// Watch failures so far (each one is retried after a backoff).
    pub restarts: u64,
}

/// The watch's status, shared with whoever reports it. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct WatchHealth(Arc<Mutex<WatchStatus>>);

impl WatchHealth {
    /// The status now.
    pub fn status(&self) -> WatchStatus {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a failure outside the watch stream (the client could not
    /// be built).
    pub fn failed(&self, message: String) {
        self.update(|s| {
            s.last_error = Some(message);
            s.failing_since.get_or_insert_with(SystemTime::now);
        });
    }

    fn update(&self, f: impl FnOnce(&mut WatchStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn contact(&self) {
        self.update(|s| {
            s.last_sync = Some(SystemTime::now());
            if s.failing_since.take().is_some() {
                info!("node watch: the apiserver answers again");
            }
        });
    }
}

/// Jittered exponential retry delays from [`RETRY_MIN`] to [`RETRY_MAX`];
/// reset by the stream once an event arrives.
#[derive(Debug, Default)]
struct Retry {
    next: Option<Duration>,
}

impl Iterator for Retry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next.unwrap_or(RETRY_MIN);
        self.next = Some((base * 2).min(RETRY_MAX));
        // Up to a quarter either way, so bridges do not retry in step.
        let spread = rand::random::<f64>() * 0.5 + 0.75;
        Some(base.mul_f64(spread))
    }
}

impl Backoff for Retry {
    fn reset(&mut self) {
        self.next = None;
    }
}

/// Watches the Nodes `settings` selects and publishes the inventory on
/// `tx` (first after the initial list, then after each batch of changes).
/// Runs until the future is dropped. `server` names the apiserver in
/// messages.
pub async fn run(
    client: kube::Client,
    settings: Inventory,
    server: String,
    tx: watch::Sender<Published>,
    health: WatchHealth,
) {
    let api: Api<KubeNode> = Api::all(client);
    let mut config = watcher::Config::default();
    if let Some(selector) = &settings.node_selector {
        config = config.labels(selector);
    }
    let mut events = watcher::watcher(api.clone(), config)
        .backoff(Retry::default())
        .boxed();
    let mut current = Discovered::new();
    // The nodes of a (re)list in progress; replaces `current` at InitDone.
    let mut listing: Option<Discovered> = None;
    let mut dirty = false;
    let mut last_publish = Instant::now() - BATCH;
    let mut recheck = tokio::time::interval(RECHECK);
    loop {
        let publish_at = last_publish + BATCH;
        tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Ok(event)) => {
                    health.contact();
                    match event {
                        Event::Init => listing = Some(Discovered::new()),
                        Event::InitApply(node) => {
                            let name = node.metadata.name.clone().unwrap_or_default();
                            listing.get_or_insert_with(Discovered::new).insert(name, found(&node, &settings));
                        }
                        Event::InitDone => {
                            current = listing.take().unwrap_or_default();
                            dirty = true;
                            health.update(|s| s.synced = true);
                        }
                        Event::Apply(node) => {
                            let name = node.metadata.name.clone().unwrap_or_default();
                            let f = found(&node, &settings);
                            if current.get(&name) != Some(&f) {
                                current.insert(name, f);
                                dirty = true;
                            }
                        }
                        Event::Delete(node) => {
                            let name = node.metadata.name.clone().unwrap_or_default();
                            dirty |= current.remove(&name).is_some();
                        }
                    }
                }
                Some(Err(e)) => {
                    let message = format!("watching Nodes on {server}: {e}; check that the apiserver is up and that the bridge may list and watch nodes");
                    warn!("{message}; the last known nodes stay served, retrying");
                    health.update(|s| {
                        s.restarts += 1;
                        s.last_error = Some(message);
                        s.failing_since.get_or_insert_with(SystemTime::now);
                    });
                }
            },
            _ = tokio::time::sleep_until(publish_at), if dirty => {
                dirty = false;
                last_publish = Instant::now();
                tx.send_replace(Arc::new(current.clone()));
            }
            _ = recheck.tick(), if health.status().failing_since.is_some() => {
                let one = ListParams::default().limit(1);
                if let Ok(Ok(_)) = tokio::time::timeout(RECHECK, api.list_metadata(&one)).await {
                    health.contact();
                }
            }
        }
    }
}
