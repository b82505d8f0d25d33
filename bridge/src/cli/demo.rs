//! `sshbridge demo`: a simulated cluster on loopback, the real daemon in
//! front of it, real traffic through both paths, and a migration from SSH
//! to Konnectivity under load with the before/after report diff.
//!
//! Each simulated node is an in-process SSH server, a TLS kubelet
//! stand-in on its own 127.77.0.N address, an echo "pod" on 127.78.N.10
//! inside the node's pod CIDR, and an in-process Konnectivity agent.
//! Everything lives in a temporary directory that is removed at the end.

mod cluster;
mod migration;
mod traffic;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use sshbridge::admin_client::AdminAddr;
use sshbridge::daemon::{Daemon, Listeners};
use sshbridge::health::PathState;
use sshbridge::report::{diff, render, Report, Thresholds};
use sshbridge_sim::{apiserver, keys, pki::Pki};
use tokio_util::sync::CancellationToken;

use super::DemoArgs;

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("sshbridge-demo-")
        .tempdir()?;
    let stop = CancellationToken::new();
    let pki = Pki::new("sshbridge demo CA")?;
    let client_key = keys::generate_ed25519();
    keys::write_private_key(dir.path().join("id_ed25519"), &client_key)?;
    let ca = pki.write_ca(dir.path())?;

    println!(
        "Starting {} simulated nodes (SSH servers, kubelets and agents on 127.77.0.x)...",
        args.nodes
    );
    let mut nodes = Vec::new();
    let mut known_hosts = String::new();
    // One kubelet port for all nodes, as in a real cluster ([health] kubelet_port).
    let mut kubelet_port = 0;
    for i in 1..=args.nodes {
        let node = cluster::start_node(i, kubelet_port, &pki, &client_key, &stop).await?;
        kubelet_port = node.kubelet.local_addr().port();
        let ssh = node.sshd.local_addr();
        known_hosts.push_str(&keys::known_hosts_line(
            &ssh.ip().to_string(),
            ssh.port(),
            &node.host_key,
        ));
        known_hosts.push('\n');
        nodes.push(node);
    }
    std::fs::write(dir.path().join("known_hosts"), known_hosts)?;
    let agent_pki = cluster::AgentPki::new(&pki, &ca, dir.path()).await?;
    let config_path = dir.path().join("sshbridge.toml");
    std::fs::write(
        &config_path,
        cluster::config_text(dir.path(), &ca, &agent_pki, &nodes),
    )?;
    let config = sshbridge_config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let egress = config
        .egress
        .http_connect_uds
        .clone()
        .context("demo config has an egress socket")?;
    let admin = AdminAddr::from(&config.admin.listen);
    let daemon = Daemon::start(
        config.clone(),
        Listeners::bind(&config).await?,
        Duration::from_secs(5),
    )?;
    let agents = nodes
        .iter()
        .map(|n| cluster::start_agent(n, &pki, &agent_pki, dir.path(), &stop))
        .collect::<anyhow::Result<Vec<_>>>()?;

    cluster::wait_until_up(&daemon, Duration::from_secs(15)).await?;
    println!(
        "All {} SSH tunnels up after {} ms (host keys verified against known_hosts).\n",
        nodes.len(),
        started.elapsed().as_millis()
    );

    let tls = pki.client_config(None)?;
    let outcomes = traffic::exercise(&egress, &nodes, args.requests, &tls).await;
    let (refused, _) = apiserver::connect_uds(&egress, "127.0.0.1:22").await?;
    print!("{}", traffic::render(&daemon, &nodes, &outcomes));
    println!(
        "\nA destination outside every node, pod CIDR and service CIDR is refused: CONNECT 127.0.0.1:22 -> {} {}",
        refused.status, refused.reason
    );

    let before = wait_for_paths(&daemon, Duration::from_secs(15)).await;
    println!("\nHealth report before the migration (`sshbridge report`; kubelet probes over both paths of each node):");
    print!("{}", render::report_table(&before, false));

    println!("\nMigrating every node to Konnectivity under load (`sshbridge migrate apply`):");
    let load_stop = stop.child_token();
    let targets = nodes
        .iter()
        .map(|n| (format!("{}:{kubelet_port}", n.name), n.address))
        .collect();
    let (load, load_task) =
        traffic::background_load(egress.clone(), targets, tls.clone(), load_stop.clone());
    let status = migration::migrate(&admin, Duration::from_secs(90)).await;
    load_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), load_task).await;
    let status = status?;
    let (load_ok, load_failed) = (
        load.ok.load(Ordering::Relaxed),
        load.failed.load(Ordering::Relaxed),
    );
    println!(
        "Migration {}; requests during it: {load_ok} ok, {load_failed} failed.",
        status.phase.as_str()
    );

    let after = daemon.report();
    println!("\nReport diff before -> after (`sshbridge report diff before.json after.json`):");
    let changes = diff(&before, &after, &Thresholds::default());
    print!("{}", render::diff_table(&changes, false));

    println!("\nFinalizing (`sshbridge migrate finalize`): every node is done, so their SSH sessions close.");
    migration::finalize(&admin).await?;
    let parked = wait_for_parked(&daemon, Duration::from_secs(10)).await;
    print!("{}", render::report_table(&parked, false));

    let failed: usize = outcomes
        .iter()
        .map(|o| o.failed + usize::from(matches!(o.bulk, Some(Err(_)))))
        .sum();
    drop(agents);
    daemon.shutdown().await;
    stop.cancel();
    let all_done = after
        .nodes
        .iter()
        .all(|n| n.route == sshbridge_config::Route::Konnectivity);
    println!(
        "\nDemo finished in {:.1} s; {} failed operations.",
        started.elapsed().as_secs_f64(),
        failed as u64 + load_failed
    );
    let ok =
        failed == 0 && load_failed == 0 && refused.status == 403 && all_done && !status.regressed();
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The report once every node's SSH session is parked (or after `limit`).
async fn wait_for_parked(daemon: &Daemon, limit: Duration) -> Report {
    let deadline = Instant::now() + limit;
    loop {
        let report = daemon.report();
        if report
            .nodes
            .iter()
            .all(|n| n.paths.ssh.state == PathState::Parked)
            || Instant::now() > deadline
        {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The report once both paths of every node are up (or after `limit`).
async fn wait_for_paths(daemon: &Daemon, limit: Duration) -> Report {
    let deadline = Instant::now() + limit;
    loop {
        let report = daemon.report();
        let all_up = report.nodes.iter().all(|n| {
            n.paths.ssh.state == PathState::Up
                && n.paths
                    .konnectivity
                    .as_ref()
                    .is_some_and(|k| k.state == PathState::Up)
        });
        if all_up || Instant::now() > deadline {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
