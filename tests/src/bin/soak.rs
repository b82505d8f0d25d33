//! `soak`: the bridge under mixed traffic for a long time, sampled every
//! 10 s; growth of memory, file descriptors or threads fails the run.
//!
//! Usage: `soak [--minutes N] [--out DIR]` (default 30 minutes,
//! `target/soak`). Three nodes with agents; traffic: echo dials to every
//! node, kubelet GETs, 1 MiB hashed streams, slow readers of an endless
//! stream; events: a node's sshd restarted every few minutes, a migration
//! to Konnectivity and its rollback. Every 10 s: the bridge's RSS, open
//! fds, threads (it exposes no task count), p99 dial latency of the last
//! 10 s, requests ok and failed. Writes `samples.json`, `summary.json` and
//! `soak.svg` into DIR. Exits 1 on growth (a linear fit's rise over the
//! run, after the first fifth, beyond a tolerance) or on errors.
//! See docs/testing.md.

#[path = "soak/load.rs"]
mod load;
#[path = "soak/sample.rs"]
mod sample;
#[path = "soak/svg.rs"]
mod svg;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sshbridge_tests::{Bridge, Cluster};
use tokio::time::Instant;

/// Between two samples.
const EVERY: Duration = Duration::from_secs(10);

struct Args {
    minutes: u64,
    out: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        minutes: 30,
        out: PathBuf::from("target/soak"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--minutes" => {
                let v = it.next().context("--minutes needs a value")?;
                a.minutes = v
                    .parse()
                    .with_context(|| format!("--minutes takes whole minutes, got {v:?}"))?;
            }
            "--out" => a.out = it.next().context("--out needs a directory")?.into(),
            other => {
                anyhow::bail!("unknown argument {other:?}; usage: soak [--minutes N] [--out DIR]")
            }
        }
    }
    anyhow::ensure!(a.minutes >= 1, "--minutes must be at least 1");
    Ok(a)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run() -> anyhow::Result<bool> {
    let args = args()?;
    std::fs::create_dir_all(&args.out)?;
    let total = Duration::from_secs(args.minutes * 60);
    let cluster = Cluster::builder().nodes(3).build().await?;
    let config = cluster.bridge_config()?;
    let k = cluster.konnectivity_config(&config)?;
    let mut agents = Vec::new();
    for node in &cluster.nodes {
        agents.push(cluster.start_agent(&k, node).await?);
    }
    let bridge = Bridge::start_with(config, Some(k), None).await?;
    for node in &cluster.nodes {
        bridge
            .wait_for_konnectivity(&node.name, Duration::from_secs(60))
            .await?;
    }
    let pid = bridge.pid().context("the bridge exited")?;
    eprintln!(
        "soak: {} min, bridge pid {pid}, samples every {EVERY:?} into {}",
        args.minutes,
        args.out.display()
    );
    let load = load::Mixed::start(&bridge, &cluster)?;
    let cluster = std::sync::Arc::new(tokio::sync::Mutex::new(cluster));
    let start = Instant::now();
    let plan = load::Events::plan(total);
    let mut samples = Vec::new();
    let mut next = start + EVERY;
    let mut events = Vec::new();
    let mut done = 0usize;
    // The event running now; samples go on while it runs.
    let mut running: Option<(load::Event, load::EventFuture<'_>)> = None;
    while start.elapsed() < total {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                let s = sample::take(pid, start, &load)?;
                eprintln!("soak: {}", s.line());
                samples.push(s);
                sample::write(&args.out.join("samples.json"), &samples)?;
                next += EVERY;
            }
            outcome = async { running.as_mut().expect("guarded").1.as_mut().await }, if running.is_some() => {
                let (e, _) = running.take().expect("guarded");
                eprintln!("soak: event {e:?} at {:.0}s: {outcome}", start.elapsed().as_secs_f64());
                events.push(serde_json::json!({
                    "ended_at_s": start.elapsed().as_secs_f64(),
                    "event": format!("{e:?}"),
                    "outcome": outcome,
                }));
            }
            e = plan.next_due(start, done), if running.is_none() => {
                done += 1;
                running = Some((e, load::Events::run(e, &bridge, cluster.clone())));
            }
        }
    }
    drop(running);
    let counts = load.stop().await;
    drop(agents);
    let verdict = sample::verdict(&samples);
    let summary = serde_json::json!({
        "minutes": args.minutes,
        "samples": samples.len(),
        "events": events,
        "requests": counts,
        "verdict": verdict.to_json(),
    });
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    std::fs::write(args.out.join("soak.svg"), svg::plot(&samples))?;
    eprintln!("soak: {}", verdict.describe());
    eprintln!(
        "soak: wrote {0}/samples.json, {0}/summary.json, {0}/soak.svg",
        args.out.display()
    );
    Ok(verdict.ok)
}
