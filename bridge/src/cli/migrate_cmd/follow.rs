//! Following a rollout: poll `GET /migration` every second and show what
//! changed, until the rollout settles (finished, aborted, or paused with no
//! node still soaking). Ctrl-C stops only the CLI.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sshbridge::admin_client::{get, AdminAddr};
use sshbridge_migrate::{NodePhase, RunPhase, Status};
use sshbridge_report::render::use_colour;
use tokio::time::{interval, Instant, MissedTickBehavior};

use super::status_table::status_text;
use super::{compact, exit_for, parse, CALL_TIMEOUT};

/// Between two polls.
const POLL: Duration = Duration::from_secs(1);
/// How long the daemon may stay unreachable (a restart resumes the
/// migration) before following gives up.
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// A progress bar of batches (indicatif), with each change logged
    /// above it.
    Terminal,
    /// One line per change.
    Plain,
    /// The status document, one line each time it changes.
    Json,
}

/// Follows the rollout until it settles; exit 3 when a node rolled back.
pub(super) async fn follow(addr: &AdminAddr, mode: Mode) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let mut tick = interval(POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shown: Option<Status> = None;
    let bar = (mode == Mode::Terminal).then(progress_bar);
    let mut unreachable_since: Option<Instant> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                eprintln!(
                    "\nStopped following. The migration continues in the daemon; \
                     reattach with `sshbridge migrate status -w`."
                );
                return Ok(ExitCode::from(130));
            }
            _ = tick.tick() => {}
        }
        let raw = match get(addr, "/migration", CALL_TIMEOUT).await {
            Ok(raw) => {
                unreachable_since = None;
                raw
            }
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= UNREACHABLE_FOR || shown.is_none() {
                    if let Some(bar) = &bar {
                        bar.abandon();
                    }
                    return Err(e.into());
                }
                match &bar {
                    Some(bar) => bar.set_message(format!("{e}; retrying")),
                    None => eprintln!("{} {e}; retrying", stamp(start)),
                }
                continue;
            }
        };
        let status: Status = parse(addr, "/migration", &raw)?;
        match mode {
            Mode::Terminal => {
                let bar = bar.as_ref().expect("terminal mode has a bar");
                for line in changes(shown.as_ref(), &status) {
                    bar.println(line);
                }
                update_bar(bar, &status);
            }
            Mode::Plain => {
                for line in changes(shown.as_ref(), &status) {
                    println!("{} {line}", stamp(start));
                }
            }
            Mode::Json => {
                if shown.as_ref().is_none_or(|s| key(s) != key(&status)) {
                    println!("{}", compact(&raw));
                }
            }
        }
        let done = settled(&status);
        shown = Some(status);
        if done {
            break;
        }
    }
    let status = shown.expect("the loop ends after a status");
    if let Some(bar) = bar {
        bar.finish_and_clear();
        print!("{}", status_text(&status, use_colour()));
    }
    if mode != Mode::Json {
        println!("{}", closing(&status));
    }
    Ok(exit_for(&status))
}

/// Nothing will change without the operator.
fn settled(s: &Status) -> bool {
    match s.phase {
        RunPhase::Running => false,
        RunPhase::Paused => !s
            .nodes
            .iter()
            .any(|n| matches!(n.phase, NodePhase::Cutover | NodePhase::Soak)),
        RunPhase::Idle | RunPhase::Aborted | RunPhase::Finished => true,
    }
}

/// What identifies a change worth a JSON line (not the ticking clocks).
fn key(s: &Status) -> (RunPhase, Option<usize>, Vec<(String, NodePhase)>) {
    let nodes = s.nodes.iter().map(|n| (n.name.clone(), n.phase)).collect();
    (s.phase, s.current_batch, nodes)
}

fn stamp(start: Instant) -> String {
    format!("[{:>5}s]", start.elapsed().as_secs())
}

/// Batches whose every node has finished its steps.
fn batches_done(s: &Status) -> usize {
    let phase: BTreeMap<&str, NodePhase> =
        s.nodes.iter().map(|n| (n.name.as_str(), n.phase)).collect();
    s.batches
        .iter()
        .filter(|b| {
            b.iter().all(|n| {
                matches!(
                    phase.get(n.as_str()),
                    Some(NodePhase::Done | NodePhase::RolledBack)
                )
            })
        })
        .count()
}

/// The lines that describe how `now` differs from `before`.
fn changes(before: Option<&Status>, now: &Status) -> Vec<String> {
    let mut out = Vec::new();
    let run_changed =
        before.is_none_or(|b| b.phase != now.phase || b.current_batch != now.current_batch);
    if run_changed {
        let mut line = format!("rollout {}", now.phase.as_str());
        if let Some(b) = now.current_batch {
            let _ = write!(line, ", batch {b} of {}", now.batches.len());
        }
        let _ = write!(
            line,
            " ({} of {} batches done)",
            batches_done(now),
            now.batches.len()
        );
        if let Some(r) = now
            .reason
            .as_deref()
            .filter(|_| now.phase != RunPhase::Running)
        {
            let _ = write!(line, ": {r}");
        }
        out.push(line);
    }
    for n in &now.nodes {
        let old = before
            .and_then(|b| b.nodes.iter().find(|o| o.name == n.name))
            .map(|o| o.phase);
        if old == Some(n.phase) || (old.is_none() && n.phase == NodePhase::Ssh) {
            continue;
        }
        let mut line = format!(
            "{}: {} -> {} (route {})",
            n.name,
            old.unwrap_or(NodePhase::Ssh).as_str(),
            n.phase.as_str(),
            n.route.as_str()
        );
        let why = match n.phase {
            NodePhase::RolledBack => n.rollback_reason.clone(),
            _ => n
                .history
                .last()
                .filter(|t| t.to == n.phase)
                .map(|t| t.reason.clone()),
        };
        if let Some(why) = why.filter(|w| !w.is_empty()) {
            let _ = write!(line, ": {why}");
        }
        if let Some(w) = &n.waiting_for {
            let _ = write!(line, "; waiting for {w}");
        }
        out.push(line);
    }
    out
}

/// Batches done out of all, the run's phase, how long, and what it waits
/// for; redrawn by indicatif, which only draws on a terminal.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} rollout {prefix} [{bar:24}] {pos}/{len} batches, {elapsed} {wide_msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn update_bar(bar: &ProgressBar, s: &Status) {
    bar.set_length(s.batches.len() as u64);
    bar.set_position(batches_done(s) as u64);
    bar.set_prefix(s.phase.as_str());
    let mut msg = String::new();
    if !s.waiting_for.is_empty() {
        let _ = write!(msg, "(waiting for {})", s.waiting_for.join("; "));
    }
    bar.set_message(msg);
}

/// The last line: how the rollout ended and what to do next.
fn closing(s: &Status) -> String {
    let done = s
        .nodes
        .iter()
        .filter(|n| n.phase == NodePhase::Done)
        .count();
    let rolled = &s.rolled_back;
    let mut line = format!(
        "Rollout {}: {done} node(s) done, {} rolled back",
        s.phase.as_str(),
        rolled.len()
    );
    if !rolled.is_empty() {
        let _ = write!(line, " ({})", rolled.join(", "));
    }
    let next = match s.phase {
        RunPhase::Paused => {
            "; inspect with `sshbridge migrate status`, then `sshbridge migrate resume` or `rollback`"
        }
        RunPhase::Aborted => "; see the reasons with `sshbridge migrate status`",
        RunPhase::Finished if rolled.is_empty() => {
            "; when every node is done, run `sshbridge migrate finalize`"
        }
        _ => "",
    };
    line.push_str(next);
    line
}
