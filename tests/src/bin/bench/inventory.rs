//! The inventory group: N Node objects in a real kube-apiserver v1.20.2
//! (the e2e harness, `ControlPlane`), an in-process SSH server behind each
//! (the scale farm), and a real `sshbridge run` with `[inventory] source =
//! "kubernetes"`. Measures the initial sync plus all tunnels up, a burst
//! of additions and deletions until the bridge has settled, and the
//! bridge's RSS; the API's own time to take the Nodes is reported apart.

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use sshbridge_config::Kubernetes;
use sshbridge_sim::pki::Pki;
use sshbridge_tests::inventory::api_only;

use crate::daemon::{metric_sum, Daemon};
use crate::inventory_api::{self, CONCURRENCY, SSH_ADDRESS};
use crate::report::{Goal, On, Row};
use crate::scale::{farm_keys, Farm};
use crate::ssh_path::bridge_config;

const GROUP: &str = "inventory";
/// Bound on the initial sync plus all tunnels up (the target is 60 s).
const ALL_UP: Duration = Duration::from_secs(180);
/// Bound on a burst settling (the target is 30 s).
const SETTLED: Duration = Duration::from_secs(120);
/// How often the bridge's metrics are read while the farm says it has not
/// settled yet (also the resolution of the "served" time).
const SCRAPE: Duration = Duration::from_millis(250);

/// What one inventory run does.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Nodes listed when the bridge starts.
    pub nodes: usize,
    /// Nodes the burst adds.
    pub add: usize,
    /// Nodes the burst deletes (the first ones listed).
    pub delete: usize,
}

/// What the bridge must show for a state to count as settled.
struct Want {
    /// Nodes served from the API and tunnels up.
    served: usize,
    /// Farm nodes whose Node was deleted: no connection may remain.
    gone: Range<usize>,
}

/// Runs the inventory group.
pub async fn run(bin: &Path, dir: &Path, plan: Plan) -> anyhow::Result<Vec<Row>> {
    let (identity, template) = farm_keys(dir)?;
    let pki = Pki::new("bench-inventory-ca")?;
    let ca = pki.write_ca(dir)?;
    let t = Instant::now();
    let cp = api_only(&pki, &ca, &dir.join("apiserver")).await?;
    let api_ready = t.elapsed();
    let farm = Farm::start(plan.nodes + plan.add, &template).await?;
    let settings = Kubernetes {
        kubeconfig: Some(cp.kubeconfig().to_path_buf()),
        context: None,
    };
    let api: Api<Node> = Api::all(sshbridge_kubeapi::client(&settings).await?);
    let created = inventory_api::create(&api, &farm.addrs, 0..plan.nodes).await?;
    let n = plan.nodes;
    let mut rows = vec![Row::new(
        GROUP,
        &format!("API: create {n} Nodes"),
        "s",
        created.as_secs_f64(),
    )
    .note(&format!(
        "not the bridge: kube-apiserver v1.20.2 + etcd taking the Nodes, {CONCURRENCY} requests \
         in flight ({:.0} Nodes/s); the apiserver was ready {:.1} s after its start",
        n as f64 / created.as_secs_f64().max(1e-9),
        api_ready.as_secs_f64()
    ))];

    let kh = dir.join("known_hosts");
    std::fs::write(&kh, farm.known_hosts())?;
    let mut config = bridge_config(&dir.join("bridge"), identity, kh, 10250, Vec::new())?;
    config.extra_bridge_lines = vec![
        "[kubernetes]".into(),
        format!("kubeconfig = {:?}", cp.kubeconfig().display().to_string()),
        "[inventory]".into(),
        "source = \"kubernetes\"".into(),
        format!("ssh_address_annotation = {SSH_ADDRESS:?}"),
    ];
    let t0 = Instant::now();
    let mut bridge = Daemon::start(bin, config).await?;
    let want = Want {
        served: n,
        gone: 0..0,
    };
    let (synced, up) = settle(&mut bridge, &farm, &want, t0, ALL_UP).await?;
    rows.push(
        Row::new(
            GROUP,
            &format!("initial sync + all up, N={n}"),
            "s",
            up.as_secs_f64(),
        )
        .target(Goal::AtMost, On::Value, 60.0)
        .note(&format!(
            "from starting the bridge until sshbridge_tunnels{{state=\"up\"}} = {n}; all {n} \
             Nodes served (sshbridge_inventory_nodes) after {:.2} s",
            synced.as_secs_f64()
        )),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = bridge.rss()?;
    rows.push(
        Row::new(GROUP, &format!("bridge RSS, N={n}"), "MiB", mib(rss)).note(&format!(
            "VmRSS with {n} discovered nodes and tunnels up ({:.1} KiB per node)",
            rss as f64 / 1024.0 / n as f64
        )),
    );

    // The burst: additions and deletions at once, as fast as the API
    // takes them.
    let (add, del) = (n..n + plan.add, 0..plan.delete);
    let t1 = Instant::now();
    let (added, deleted) = tokio::join!(
        inventory_api::create(&api, &farm.addrs, add.clone()),
        inventory_api::delete(&api, del.clone()),
    );
    let (added, deleted) = (added?, deleted?);
    let want = Want {
        served: n - plan.delete + plan.add,
        gone: del,
    };
    let (_, settled) = settle(&mut bridge, &farm, &want, t1, SETTLED).await?;
    let name = format!("burst +{}/-{} settled, N={n}", plan.add, plan.delete);
    rows.push(
        Row::new(GROUP, &name, "s", settled.as_secs_f64())
            .target(Goal::AtMost, On::Value, 30.0)
            .note(&format!(
                "from the first API call until {} tunnels up, {} served, none draining and no \
                 connection left to a deleted node; the API took the additions in {:.2} s and \
                 the deletions in {:.2} s (concurrently)",
                want.served,
                want.served,
                added.as_secs_f64(),
                deleted.as_secs_f64()
            )),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = bridge.rss()?;
    rows.push(
        Row::new(
            GROUP,
            &format!("bridge RSS after burst, N={n}"),
            "MiB",
            mib(after),
        )
        .note(&format!("{} discovered nodes and tunnels up", want.served)),
    );
    bridge.stop().await;
    drop(cp);
    Ok(rows)
}

/// Polls the bridge's metrics (and the farm's connection counts) until
/// `want` holds; returns when every wanted Node was served and when the
/// whole state held, both from `since`. Fails after `within`. The metrics
/// of thousands of nodes cost the bridge to render, so they are read every
/// [`SCRAPE`] only, and as often as every 50 ms once the farm's own counts
/// say the bridge may have settled.
async fn settle(
    bridge: &mut Daemon,
    farm: &Farm,
    want: &Want,
    since: Instant,
    within: Duration,
) -> anyhow::Result<(Duration, Duration)> {
    let mut served_at = None;
    let mut last = String::from("no metrics yet");
    let mut next_scrape = Instant::now();
    while since.elapsed() < within {
        bridge.check_running()?;
        let lingering = farm.active_on(want.gone.clone());
        let maybe = farm.active() == want.served as u64 && lingering == 0;
        if maybe || Instant::now() >= next_scrape {
            next_scrape = Instant::now() + SCRAPE;
            if let Ok(text) = bridge.metrics().await {
                let served = metric_sum(&text, "sshbridge_inventory_nodes{source=\"kubernetes\"}");
                let up = metric_sum(&text, "sshbridge_tunnels{state=\"up\"}");
                let draining = metric_sum(&text, "sshbridge_tunnels{state=\"draining\"}");
                let served_ok = served as usize == want.served;
                if served_ok && served_at.is_none() {
                    served_at = Some(since.elapsed());
                }
                if served_ok && up as usize == want.served && draining == 0.0 && lingering == 0 {
                    return Ok((served_at.unwrap_or_default(), since.elapsed()));
                }
                last = format!(
                    "{served} served, {up} up, {draining} draining, {lingering} connections to \
                     deleted nodes"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    bail!(
        "the bridge did not settle on {} nodes within {within:?} (last: {last}); bridge log:\n{}",
        want.served,
        bridge.log_tail(30)
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
