//! `sshbridge run`: the daemon with its signals. SIGHUP reloads (an invalid
//! config is logged and the running one kept), SIGTERM/SIGINT drain, a
//! second SIGTERM/SIGINT cuts at once.
//!
//! No signal can hit a default disposition during start-up: `main` blocks
//! SIGHUP/SIGTERM/SIGINT before anything else (so every thread it starts
//! inherits the block), and `run` installs the handlers as its first step
//! and only then unblocks them; a signal sent in between waits, pending,
//! and is handled once the daemon runs (a SIGHUP then reloads).

use std::process::ExitCode;

use anyhow::Context;
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use sshbridge::daemon::{Daemon, Listeners};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

use super::{init_logging, RunArgs};

/// The signals `run` handles.
const HANDLED: [Signal; 3] = [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT];

fn mask_signals(how: SigmaskHow) {
    let set: SigSet = HANDLED.into_iter().collect();
    // Only fails on an invalid `how`, which these constants are not.
    let _ = pthread_sigmask(how, Some(&set), None);
}

/// Blocks the signals `run` handles on the calling thread (and every
/// thread it starts afterwards). `main` calls it first thing.
pub fn hold_signals() {
    mask_signals(SigmaskHow::SIG_BLOCK);
}

/// Unblocks them on the calling thread: a command other than `run`, or
/// `run` once its handlers are installed.
pub fn release_signals() {
    mask_signals(SigmaskHow::SIG_UNBLOCK);
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // First: the handlers, then let the held signals in (this is the
    // thread `main` blocked on, so pending ones arrive here now).
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    release_signals();
    init_logging(args.log_format);
    let config = match sshbridge_config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    let listeners = Listeners::bind(&config)
        .await
        .context("cannot bind the egress listeners")?;
    info!(
        config = %args.config.display(),
        bridge_id = %config.bridge.id,
        nodes = config.nodes.len(),
        version = env!("CARGO_PKG_VERSION"),
        "sshbridge starting"
    );
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let daemon = Daemon::start(config, listeners, args.drain_timeout).context("cannot start")?;
    let mut inventory = daemon.inventory_updates();
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&daemon, &args.config),
            Some(discovered) = inventory_changed(&mut inventory) => {
                match daemon.apply_inventory(discovered) {
                    Ok(s) if s.added.is_empty() && s.removed.is_empty() && s.replaced.is_empty() => {}
                    Ok(s) => info!(
                        added = ?s.added, removed = ?s.removed, replaced = ?s.replaced, kept = s.kept,
                        "node inventory applied"
                    ),
                    Err(e) => error!("node inventory not applied, the running nodes stay: {e}"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!(grace = ?args.drain_timeout, "shutting down: no new streams, draining open ones");
    let handle = daemon.abort_handle();
    let abort = tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        info!("second signal: cutting all streams now");
        handle.abort();
    });
    daemon.shutdown().await;
    abort.abort();
    info!("sshbridge stopped");
    Ok(ExitCode::SUCCESS)
}

/// The next inventory the Node watch publishes; never, without a watch.
async fn inventory_changed(
    rx: &mut Option<tokio::sync::watch::Receiver<sshbridge::kubeapi::inventory::Published>>,
) -> Option<sshbridge::kubeapi::inventory::Published> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

fn reload(daemon: &Daemon, path: &std::path::Path) {
    info!(config = %path.display(), "SIGHUP: reloading configuration");
    let config = match sshbridge_config::load(path) {
        Ok(c) => c,
        Err(e) => {
            return error!("reload rejected, the running configuration stays in force:\n{e}");
        }
    };
    match daemon.reload(config) {
        Ok(s) => info!(
            added = ?s.added, removed = ?s.removed, replaced = ?s.replaced, kept = s.kept,
            "configuration reloaded"
        ),
        Err(e) => error!("reload rejected, the running configuration stays in force: {e}"),
    }
}
