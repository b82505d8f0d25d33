//! The task behind [`Peers`](super::Peers): writes this bridge's status
//! object when what it says changed (a path's state, its failures, its
//! agents, its error) or when a heartbeat is due (one interval after the
//! last write), checking five times per interval; lists every bridge's
//! object once per interval.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sshbridge_kubeapi::status::{self, Publisher};
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::super::Shared;
use crate::tasks::Tasks;

/// Wait between attempts to build the API client.
const CLIENT_RETRY: Duration = Duration::from_secs(2);
/// Largest nodes' document written: a ConfigMap holds at most 1 MiB.
const MAX_DOC: usize = 900 << 10;
/// Checks for a change per interval.
const CHECKS_PER_INTERVAL: u32 = 5;

/// Starts the status task when `[ha] status` is set (and `[kubernetes]`,
/// which the config requires with it). Off: nothing runs, `/report` has
/// no `bridges` part and the migration sees no peers.
pub(in crate::daemon) fn start(shared: &Arc<Shared>, tasks: &Tasks, stop: CancellationToken) {
    let config = shared.snapshot().config.clone();
    let (Some(namespace), Some(kube)) = (&config.ha.status_namespace, &config.kubernetes) else {
        return;
    };
    let interval = config.ha.status_interval;
    {
        let mut t = shared.peers.lock();
        t.settings = Some((namespace.clone(), interval));
        t.own = config.bridge.id.clone();
    }
    let (shared, namespace, kube) = (shared.clone(), namespace.clone(), kube.clone());
    tasks.spawn("bridge status objects", async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = run(shared, namespace, kube, interval) => {}
        }
    });
}

async fn run(
    shared: Arc<Shared>,
    namespace: String,
    kube: sshbridge_config::Kubernetes,
    interval: Duration,
) {
    let client = loop {
        match sshbridge_kubeapi::client(&kube).await {
            Ok(c) => break c,
            Err(e) => {
                warn!("bridge status: {e}; retrying in {CLIENT_RETRY:?}");
                shared.peers.lock().publish.last_error = Some(e.to_string());
                sleep(CLIENT_RETRY).await;
            }
        }
    };
    let own = shared.snapshot().config.bridge.id.clone();
    let mut publisher = Publisher::new(client.clone(), &namespace, &own);
    info!(namespace = %namespace, configmap = %publisher.name(), ?interval, "bridge status: publishing");
    let check = interval / CHECKS_PER_INTERVAL;
    let (mut written, mut said, mut listed): (Option<Instant>, String, Option<Instant>) =
        (None, String::new(), None);
    let mut was_trimmed = false;
    loop {
        let snap = shared.snapshot();
        let (doc, trimmed) = sshbridge_migrate::peers::fit(super::document(&snap), MAX_DOC);
        if trimmed && !was_trimmed {
            warn!("bridge status: the nodes' document is over {MAX_DOC} bytes; last errors are left out (states stay)");
        }
        was_trimmed = trimmed;
        let json = serde_json::to_string(&doc).unwrap_or_default();
        let key = what_it_says(&doc);
        let due = written.is_none_or(|at| at.elapsed() + check / 2 >= interval);
        if key != said || due {
            match timeout(interval, publisher.publish(interval, &json)).await {
                Ok(Ok(bytes)) => {
                    let mut t = shared.peers.lock();
                    t.publish.writes += 1;
                    t.publish.last_bytes = bytes as u64;
                    t.publish.last_error = None;
                    (written, said) = (Some(Instant::now()), key);
                }
                Ok(Err(e)) => failed(&shared, e.to_string()),
                Err(_) => failed(&shared, format!("write took longer than {interval:?}")),
            }
        }
        if listed.is_none_or(|at| at.elapsed() + check / 2 >= interval) {
            listed = Some(Instant::now());
            match timeout(interval, status::list(client.clone(), &namespace)).await {
                Ok(Ok(objects)) => {
                    shared
                        .peers
                        .update(objects, Instant::now(), SystemTime::now());
                }
                Ok(Err(e)) => failed(&shared, e.to_string()),
                Err(_) => failed(&shared, format!("list took longer than {interval:?}")),
            }
        }
        sleep(check).await;
    }
}

/// Records a write or list failure; warns when it is a new one.
fn failed(shared: &Shared, error: String) {
    let mut t = shared.peers.lock();
    if t.publish.last_error.as_ref() != Some(&error) {
        warn!("bridge status: {error}");
    }
    t.publish.last_error = Some(error);
}

/// The document without its latency figures and window sizes: what makes
/// a write urgent. Those move with every probe and ride along with
/// heartbeats.
fn what_it_says(doc: &std::collections::BTreeMap<String, sshbridge_migrate::NodeHealth>) -> String {
    let mut plain = doc.clone();
    for h in plain.values_mut() {
        for p in [h.ssh.as_mut(), h.konnectivity.as_mut()]
            .into_iter()
            .flatten()
        {
            (p.p50_ms, p.p99_ms, p.window) = (None, None, 0);
        }
    }
    serde_json::to_string(&plain).unwrap_or_default()
}
