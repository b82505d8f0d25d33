//! The migration as an operator drives it: the daemon's `/migration` admin
//! API (status, plan, apply, rollback), and a continuous request load that
//! counts every failed request while nodes move between paths.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use sshbridge::admin_client::{get, post, ClientError};
use sshbridge_migrate::{NodePhase, Plan, Status};
use tokio_util::sync::CancellationToken;

use crate::bridge::Bridge;
use crate::client::{kubelet_get, Egress};
use crate::cluster::Cluster;

/// Bound on one admin call.
const CALL: Duration = Duration::from_secs(10);

impl Bridge {
    /// `GET /migration`, parsed.
    pub async fn migration_status(&self) -> anyhow::Result<Status> {
        let body = get(&self.admin_addr(), "/migration", CALL).await?;
        serde_json::from_slice(&body).context("GET /migration is not a Status")
    }

    /// `POST /migration/ACTION` with `body`; the body of a 200 answer, or the
    /// admin API's error.
    pub async fn migration_post(&self, action: &str, body: &str) -> anyhow::Result<String> {
        let path = format!("/migration/{action}");
        let out = post(&self.admin_addr(), &path, body, CALL).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// `POST /migration/ACTION` with `body`, whatever the status: the
    /// status and the body (for a refusal, the admin API's error message).
    pub async fn migration_answer(
        &self,
        action: &str,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        let path = format!("/migration/{action}");
        match post(&self.admin_addr(), &path, body, CALL).await {
            Ok(out) => Ok((200, String::from_utf8_lossy(&out).into_owned())),
            Err(ClientError::Status { status, body, .. }) => Ok((status, body)),
            Err(e) => Err(e.into()),
        }
    }

    /// `POST /migration/plan` with ApplyOptions JSON `body`.
    pub async fn migration_plan(&self, body: &str) -> anyhow::Result<Plan> {
        let text = self.migration_post("plan", body).await?;
        serde_json::from_str(&text).with_context(|| format!("plan answer {text}"))
    }

    /// Polls `/migration` until `ok` holds (bounded by `within`); the error
    /// names `what` and shows the last status.
    pub async fn wait_for_migration(
        &self,
        what: &str,
        within: Duration,
        ok: impl Fn(&Status) -> bool,
    ) -> anyhow::Result<Status> {
        let mut last = String::from("no status yet");
        let poll = async {
            loop {
                match self.migration_status().await {
                    Ok(s) if ok(&s) => return s,
                    Ok(s) => last = status_summary(&s),
                    Err(e) => last = format!("{e:#}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        match tokio::time::timeout(within, poll).await {
            Ok(s) => Ok(s),
            Err(_) => bail!(
                "/migration never showed {what} within {within:?}; last: {last}\nbridge log:\n{}",
                self.log_tail(40)
            ),
        }
    }
}

/// The phase of `node` in `status` (`ssh` when the migration never touched it).
pub fn phase_of(status: &Status, node: &str) -> NodePhase {
    status
        .nodes
        .iter()
        .find(|n| n.name == node)
        .map_or(NodePhase::Ssh, |n| n.phase)
}

/// One line: run phase, reason, each node's phase.
pub fn status_summary(s: &Status) -> String {
    let nodes: Vec<String> = s
        .nodes
        .iter()
        .map(|n| format!("{}={}", n.name, n.phase))
        .collect();
    format!(
        "{} (reason {:?}, last_error {:?}) {}",
        s.phase.as_str(),
        s.reason,
        s.last_error,
        nodes.join(" ")
    )
}

/// What the load saw, per node.
#[derive(Debug, Clone, Default)]
pub struct LoadCounts {
    /// Requests answered by the right node's kubelet.
    pub ok: BTreeMap<String, u64>,
    /// Failed requests, each with its node and error (the first 20 kept).
    pub failures: Vec<String>,
    /// All failed requests.
    pub failed: u64,
}

impl LoadCounts {
    /// Successful requests over all nodes.
    pub fn total_ok(&self) -> u64 {
        self.ok.values().sum()
    }
}

/// Kubelet GETs through CONNECT to every node, back to back, one worker per
/// node, until stopped. Each request is a new stream, so it takes the
/// node's route of that moment.
pub struct Load {
    counts: Arc<Mutex<LoadCounts>>,
    stop: CancellationToken,
    workers: tokio::task::JoinSet<()>,
}

impl Load {
    /// Starts the load on `bridge`'s CONNECT egress for every node.
    pub fn start(bridge: &Bridge, cluster: &Cluster) -> anyhow::Result<Load> {
        let tls = cluster.kubelet_client_tls()?;
        let counts = Arc::new(Mutex::new(LoadCounts::default()));
        let stop = CancellationToken::new();
        let mut workers = tokio::task::JoinSet::new();
        for node in &cluster.nodes {
            let egress = bridge.egress();
            let target = node.kubelet_target();
            let (name, ip) = (node.name.clone(), node.address);
            let (tls, counts, stop) = (tls.clone(), counts.clone(), stop.clone());
            workers.spawn(async move {
                while !stop.is_cancelled() {
                    let outcome = one_request(&egress, &target, tls.clone(), ip, &name).await;
                    {
                        let mut c = counts.lock().expect("poisoned");
                        match outcome {
                            Ok(()) => *c.ok.entry(name.clone()).or_default() += 1,
                            Err(e) => {
                                c.failed += 1;
                                if c.failures.len() < 20 {
                                    c.failures.push(format!("{name}: {e:#}"));
                                }
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
        Ok(Load {
            counts,
            stop,
            workers,
        })
    }

    /// The counts so far.
    pub fn counts(&self) -> LoadCounts {
        self.counts.lock().expect("poisoned").clone()
    }

    /// Stops the workers (letting the requests in flight finish) and
    /// returns the final counts.
    pub async fn stop(mut self) -> anyhow::Result<LoadCounts> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), async {
            while self.workers.join_next().await.is_some() {}
        })
        .await
        .context("load workers did not stop within 30s")?;
        Ok(self.counts())
    }
}

async fn one_request(
    egress: &Egress,
    target: &str,
    tls: Arc<rustls::ClientConfig>,
    ip: IpAddr,
    name: &str,
) -> anyhow::Result<()> {
    let c = egress.connect(target).await?;
    if c.status != 200 {
        bail!("CONNECT {target}: {} {}", c.status, c.body.trim());
    }
    let (status, body) = kubelet_get(c.stream, tls, ip, "/load").await?;
    let want = format!("node={name} path=/load\n");
    if status != 200 || body != want {
        bail!("kubelet answered {status} {body:?}");
    }
    Ok(())
}
