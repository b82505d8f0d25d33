//! The demo's migration: the same admin API calls `sshbridge migrate
//! apply` makes, with progress printed as lines.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sshbridge::admin_client::{get, post, AdminAddr};
use sshbridge_migrate::{FinalState, NodePhase, Plan, RunPhase, Status};

const CALL: Duration = Duration::from_secs(10);

/// Applies the configured rollout and follows it until it ends (bounded by
/// `limit`), printing each node's transitions.
pub(super) async fn migrate(admin: &AdminAddr, limit: Duration) -> anyhow::Result<Status> {
    let plan: Plan = serde_json::from_slice(&post(admin, "/migration/apply", "{}", CALL).await?)
        .context("the daemon's plan is not a migration plan")?;
    let plan = plan.to_string();
    println!("{}", plan.trim_end());
    let started = Instant::now();
    let mut seen: HashMap<String, NodePhase> = HashMap::new();
    loop {
        let status: Status = serde_json::from_slice(&get(admin, "/migration", CALL).await?)
            .context("the daemon's status is not a migration status")?;
        for node in &status.nodes {
            let before = seen.insert(node.name.clone(), node.phase);
            if before != Some(node.phase) {
                let why = node
                    .rollback_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                println!(
                    "  {:>5.1}s  {:<7} {}{why}",
                    started.elapsed().as_secs_f64(),
                    node.name,
                    node.phase
                );
            }
        }
        if matches!(
            status.phase,
            RunPhase::Finished | RunPhase::Paused | RunPhase::Aborted
        ) {
            return Ok(status);
        }
        if started.elapsed() > limit {
            bail!(
                "the migration did not finish within {limit:?}: {}",
                status.waiting_for.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Finalizes the migration (every node must be done).
pub(super) async fn finalize(admin: &AdminAddr) -> anyhow::Result<FinalState> {
    let body = post(admin, "/migration/finalize", "{}", CALL).await?;
    serde_json::from_slice(&body).context("the daemon's answer is not a final state")
}
