//! A migration record shared by several bridges (`[migration] store =
//! "kubernetes:NAMESPACE/NAME"`, docs/migration.md, "High availability").
//!
//! The daemon reads the record, runs a Lease elector
//! (`[migration.leader_election]`) and starts the controller in shared mode:
//! the leader steps the rollout, every other bridge follows the record's
//! routes. Until the record has been read once (the apiserver may be down
//! when the bridge starts) the migration API says it is starting, every
//! node keeps its configured route, and reading is retried with backoff.
//! On shutdown the controller stops first, then the Lease is released, so
//! another bridge leads within one `retry_period` instead of a whole
//! `lease_duration`.

use std::sync::Arc;
use std::time::Duration;

use sshbridge_kubeapi::lease::{ElectionSettings, LeaderState, Leadership};
use sshbridge_kubeapi::record::KubeStore;
use sshbridge_migrate::{Controller, Role, Settings, Store, StoreError, StoreSpec};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::migration::{self, Unavailable};
use super::Shared;

/// Longest wait between two attempts to read the record.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The record's namespace and name when the store is `kubernetes:`.
pub(super) fn record(config: &sshbridge_config::Config) -> Option<(String, String)> {
    match StoreSpec::parse(&config.migration.store) {
        Ok(StoreSpec::Kubernetes { namespace, name }) => Some((namespace, name)),
        _ => None,
    }
}

/// The "migration controller" task of a bridge on a shared record: reads
/// the record, elects, runs the controller until `root` is cancelled,
/// then stops it and releases the Lease.
pub(super) async fn run(
    shared: Arc<Shared>,
    (namespace, name): (String, String),
    root: CancellationToken,
) {
    let config = shared.snapshot().config.clone();
    let (Some(kube), Some(election)) = (&config.kubernetes, &config.migration.leader_election)
    else {
        // Validation requires both with a `kubernetes:` store.
        let _ = shared.migration.set(Err(Unavailable::Shared(
            "a kubernetes: store needs [kubernetes] and [migration.leader_election]".into(),
        )));
        return;
    };
    let client = match sshbridge_kubeapi::client(kube).await {
        Ok(c) => c,
        Err(e) => {
            let _ = shared
                .migration
                .set(Err(Unavailable::Shared(e.to_string())));
            return;
        }
    };
    let mut store = KubeStore::new(client.clone(), &namespace, &name);
    let Some(state) = read_until_done(&mut store, &root).await else {
        return;
    };
    let state = match state {
        Ok(state) => state,
        Err(e) => {
            tracing::error!("{e}; nodes keep their configured routes");
            let _ = shared.migration.set(Err(Unavailable::Store(e)));
            return;
        }
    };
    let leadership = Leadership::start(
        client,
        ElectionSettings::from_config(election, &config.bridge.id),
    );
    let (role_tx, role) = watch::channel(role_of(&leadership.state()));
    let controller = Controller::start_shared(
        migration::fleet(&shared),
        store,
        state,
        Settings::from_config(&config.migration),
        CancellationToken::new(),
        role,
    );
    info!(
        record = %format!("configmap {namespace}/{name}"),
        identity = %config.bridge.id,
        "migration controller started on the shared record; electing a leader"
    );
    let _ = shared.migration.set(Ok(controller));
    migration::park_if_finalized(shared.clone()).await;
    follow_leadership(&leadership, &role_tx, &root).await;
    if let Some(Ok(controller)) = shared.migration.get() {
        let running = controller.running_tasks();
        controller.shutdown().await;
        info!("migration controller stopped with its watchers ({running} tasks)");
    }
    let was_leading = leadership.is_leader();
    leadership.release().await;
    if was_leading {
        info!("released the migration Lease: another bridge may lead at once");
    }
}

/// Reads the record, retrying while the apiserver does not answer. `None`
/// when `root` was cancelled first; `Some(Err)` for a record this bridge
/// must not use (garbled, newer schema, deleted).
async fn read_until_done(
    store: &mut KubeStore,
    root: &CancellationToken,
) -> Option<Result<sshbridge_migrate::MigrationState, StoreError>> {
    let mut delay = Duration::from_secs(1);
    loop {
        match store.load().await {
            Ok(state) => return Some(Ok(state.unwrap_or_default())),
            Err(e @ StoreError::Api { .. }) => {
                warn!(
                    "{e}; the migration waits (routes as configured), retrying in {}s",
                    delay.as_secs()
                );
            }
            Err(e) => return Some(Err(e)),
        }
        tokio::select! {
            _ = root.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RETRY);
    }
}

/// Passes every change of the elector's state to the controller until
/// `root` is cancelled, logging each change of leader.
async fn follow_leadership(
    leadership: &Leadership,
    role_tx: &watch::Sender<Role>,
    root: &CancellationToken,
) {
    let mut states = leadership.watch();
    loop {
        tokio::select! {
            _ = root.cancelled() => return,
            changed = states.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let role = role_of(&states.borrow_and_update());
        if role != *role_tx.borrow() {
            match (&role.leading, &role.leader) {
                (true, _) => info!("this bridge leads the migration"),
                (false, Some(l)) => info!(leader = %l, "this bridge follows the migration"),
                (false, None) => info!("no bridge leads the migration right now"),
            }
            role_tx.send_replace(role);
        }
    }
}

fn role_of(state: &LeaderState) -> Role {
    Role {
        leading: state.leading,
        leader: state.holder.clone(),
    }
}
