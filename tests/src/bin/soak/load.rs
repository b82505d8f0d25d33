//! The soak's traffic (loops of each kind, counted) and its events (node
//! restarts, a migration and its rollback), planned over the run.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, RngCore};
use sshbridge::report::PathState;
use sshbridge_migrate::NodePhase;
use sshbridge_tests::netlab::traffic::Traffic;
use sshbridge_tests::{kubelet_get, phase_of, ssh_state, Bridge, Cluster, Egress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bound on one request of any kind.
const REQUEST: Duration = Duration::from_secs(20);

/// Per kind: (ok, failed), and the last few errors.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counts {
    pub by_kind: BTreeMap<String, (u64, u64)>,
    pub last_errors: Vec<String>,
}

/// Echo dials (through [`Traffic`], for latencies), kubelet GETs, hashed
/// bulk streams and slow readers, to every node, until stopped.
pub struct Mixed {
    pub traffic: Traffic,
    counts: Arc<Mutex<Counts>>,
    stop: CancellationToken,
}

impl Mixed {
    pub fn start(bridge: &Bridge, cluster: &Cluster) -> anyhow::Result<Mixed> {
        let targets = cluster
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.echo.addr().to_string()))
            .collect();
        let traffic = Traffic::start(bridge.egress(), targets, Duration::from_millis(200));
        let counts: Arc<Mutex<Counts>> = Arc::default();
        let stop = CancellationToken::new();
        let tls = cluster.kubelet_client_tls()?;
        let egress = bridge.egress();
        let kubelets: Vec<_> = cluster
            .nodes
            .iter()
            .map(|n| (n.kubelet_target(), n.address))
            .collect();
        let hashes: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| n.hash.addr().to_string())
            .collect();
        let hoses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| n.firehose.addr().to_string())
            .collect();
        let spawn = |kind: &'static str,
                     pause: Duration,
                     f: Arc<dyn Fn(usize) -> BoxFut + Send + Sync>| {
            let (counts, stop) = (counts.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.is_cancelled() {
                    let r = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = tokio::time::timeout(REQUEST, f(i)) => r.unwrap_or_else(|_| Err(anyhow::anyhow!("timed out"))),
                    };
                    record(&counts, kind, r);
                    i += 1;
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            });
        };
        let (e, t) = (egress.clone(), tls.clone());
        spawn(
            "kubelet_get",
            Duration::from_millis(500),
            Arc::new(move |i| {
                let (target, ip) = kubelets[i % kubelets.len()].clone();
                let (e, t) = (e.clone(), t.clone());
                Box::pin(async move {
                    let c = e.connect(&target).await?;
                    anyhow::ensure!(c.status == 200, "CONNECT {target}: {c:?}");
                    let (status, _) = kubelet_get(c.stream, t, ip, "/healthz").await?;
                    anyhow::ensure!(status == 200, "kubelet {target} answered {status}");
                    Ok(())
                })
            }),
        );
        let e = egress.clone();
        spawn(
            "bulk_1mib",
            Duration::from_secs(5),
            Arc::new(move |i| {
                let (e, target) = (e.clone(), hashes[i % hashes.len()].clone());
                Box::pin(async move { bulk(&e, &target).await })
            }),
        );
        let e = egress;
        spawn(
            "slow_reader",
            Duration::from_secs(7),
            Arc::new(move |i| {
                let (e, target) = (e.clone(), hoses[i % hoses.len()].clone());
                Box::pin(async move { slow_reader(&e, &target).await })
            }),
        );
        Ok(Mixed {
            traffic,
            counts,
            stop,
        })
    }

    /// Stops every loop; the final counts (echo dials included).
    pub async fn stop(self) -> Counts {
        self.stop.cancel();
        self.traffic.stop();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut c = self.counts.lock().expect("poisoned").clone();
        let attempts = self.traffic.attempts();
        let failed = attempts.iter().filter(|a| a.result.is_err()).count() as u64;
        c.by_kind
            .insert("echo_dial".into(), (attempts.len() as u64 - failed, failed));
        c
    }

    /// Failed requests of the loops so far (echo dials not included).
    pub fn failed(&self) -> u64 {
        self.counts
            .lock()
            .expect("poisoned")
            .by_kind
            .values()
            .map(|v| v.1)
            .sum()
    }
}

type BoxFut = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

fn record(counts: &Mutex<Counts>, kind: &str, r: anyhow::Result<()>) {
    let mut c = counts.lock().expect("poisoned");
    let entry = c.by_kind.entry(kind.to_string()).or_default();
    match r {
        Ok(()) => entry.0 += 1,
        Err(e) => {
            entry.1 += 1;
            c.last_errors.push(format!("{kind}: {e:#}"));
            let n = c.last_errors.len();
            if n > 10 {
                c.last_errors.drain(..n - 10);
            }
        }
    }
}

async fn bulk(e: &Egress, target: &str) -> anyhow::Result<()> {
    let c = e.connect(target).await?;
    anyhow::ensure!(c.status == 200, "CONNECT {target}: {c:?}");
    let mut s = c.stream;
    let mut data = vec![0u8; 1 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    s.write_all(&data).await?;
    s.shutdown().await?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await?;
    anyhow::ensure!(
        answer.trim() == sshbridge_tests::sha256_hex(&data),
        "1 MiB to {target} arrived changed"
    );
    Ok(())
}

/// Reads an endless stream 4 KiB at a time, 10 times a second, for 3 s.
async fn slow_reader(e: &Egress, target: &str) -> anyhow::Result<()> {
    let c = e.connect_server_speaks_first(target).await?;
    anyhow::ensure!(c.status == 200, "CONNECT {target}: {c:?}");
    let mut s = c.stream;
    let mut buf = vec![0u8; 4096];
    for _ in 0..30 {
        s.read_exact(&mut buf).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Something the soak does to the cluster.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// Kill node i's sshd and start it again.
    RestartNode(usize),
    /// Apply a migration of every node, wait for soak, roll back all.
    MigrateAndRollback,
}

/// A running event; it ends with what happened, as text.
pub type EventFuture<'a> = std::pin::Pin<Box<dyn Future<Output = String> + 'a>>;

/// The events of a run, by time from the start.
pub struct Events(Vec<(Duration, Event)>);

impl Events {
    /// Restarts every fifth of the run (30 s to 3 min apart), migration
    /// cycles at 30 % and 65 % (one at 50 % in runs under 4 minutes), no
    /// restart within a minute after a migration starts.
    pub fn plan(total: Duration) -> Events {
        let migrations: Vec<Duration> = if total < Duration::from_secs(240) {
            vec![total / 2]
        } else {
            vec![total * 3 / 10, total * 13 / 20]
        };
        let every = (total / 5).clamp(Duration::from_secs(30), Duration::from_secs(180));
        let mut list: Vec<(Duration, Event)> = migrations
            .iter()
            .map(|m| (*m, Event::MigrateAndRollback))
            .collect();
        let mut at = every;
        let mut node = 0;
        while at + Duration::from_secs(20) < total {
            let clash = migrations
                .iter()
                .any(|m| at + Duration::from_secs(5) >= *m && at < *m + Duration::from_secs(60));
            if !clash {
                list.push((at, Event::RestartNode(node % 3)));
                node += 1;
            }
            at += every;
        }
        list.sort_by_key(|(t, _)| *t);
        Events(list)
    }

    /// Waits for event number `done` (forever when none is left).
    pub async fn next_due(&self, start: Instant, done: usize) -> Event {
        match self.0.get(done) {
            Some((at, e)) => {
                tokio::time::sleep_until(start + *at).await;
                *e
            }
            None => std::future::pending().await,
        }
    }

    /// Runs `e`; it ends with what happened, as text.
    pub fn run(
        e: Event,
        bridge: &Bridge,
        cluster: Arc<tokio::sync::Mutex<Cluster>>,
    ) -> EventFuture<'_> {
        Box::pin(async move {
            let mut cluster = cluster.lock().await;
            let cluster = &mut *cluster;
            let started = Instant::now();
            let r = match e {
                Event::RestartNode(i) => restart(bridge, cluster, i).await,
                Event::MigrateAndRollback => migrate_and_roll_back(bridge, cluster).await,
            };
            match r {
                Ok(()) => format!("ok in {:.1}s", started.elapsed().as_secs_f64()),
                Err(e) => format!(
                    "FAILED after {:.1}s: {e:#}",
                    started.elapsed().as_secs_f64()
                ),
            }
        })
    }
}

async fn restart(bridge: &Bridge, cluster: &mut Cluster, i: usize) -> anyhow::Result<()> {
    let name = cluster.nodes[i].name.clone();
    cluster.nodes[i].sshd.kill();
    // Long enough for the bridge to notice, short enough to be a restart.
    tokio::time::sleep(Duration::from_millis(
        rand::thread_rng().gen_range(500..3000),
    ))
    .await;
    cluster.nodes[i].sshd.restart().await?;
    bridge
        .wait_for_report(
            &format!("{name} up after its restart"),
            Duration::from_secs(60),
            |r| ssh_state(r, &name) == Some(PathState::Up),
        )
        .await?;
    Ok(())
}

async fn migrate_and_roll_back(bridge: &Bridge, cluster: &Cluster) -> anyhow::Result<()> {
    let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    bridge
        .migration_post("apply", r#"{"batch_size":{"count":3},"soak":"60s"}"#)
        .await?;
    bridge
        .wait_for_migration("every node in soak", Duration::from_secs(90), |s| {
            nodes.iter().all(|n| phase_of(s, n) == NodePhase::Soak)
        })
        .await?;
    bridge.migration_post("rollback", r#"{"all":true}"#).await?;
    bridge
        .wait_for_migration("every node rolled back", Duration::from_secs(30), |s| {
            nodes
                .iter()
                .all(|n| phase_of(s, n) == NodePhase::RolledBack)
        })
        .await?;
    Ok(())
}
