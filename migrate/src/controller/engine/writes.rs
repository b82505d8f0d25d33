//! Writing the state, and who may: a conflict rereads the record; a
//! follower (not the Lease holder) takes no step and follows the record.

use tokio::sync::watch;

use super::{Engine, Written, WRITE_ATTEMPTS};
use crate::controller::Role;
use crate::fleet::Fleet;
use crate::state::{MigrationState, RunPhase, TransitionError};
use crate::store::Store;

/// The next change of `role`; never, without one. An elector that is
/// gone counts as not leading (nothing renews the Lease any more).
pub(super) async fn role_changed(role: &mut Option<watch::Receiver<Role>>) -> Option<Role> {
    let Some(r) = role.as_mut() else {
        return std::future::pending().await;
    };
    if r.changed().await.is_ok() {
        return Some(r.borrow_and_update().clone());
    }
    *role = None;
    Some(Role::default())
}

impl<F: Fleet, S: Store> Engine<F, S> {
    /// Leadership gained: continue from the record as the last leader
    /// left it. Lost: stop every watcher (no step is taken; routes stay).
    pub(super) async fn role_changed(&mut self, role: Role) {
        self.leader = role.leader.clone();
        if role.leading == self.leading {
            return;
        }
        self.leading = role.leading;
        if role.leading {
            tracing::info!("migration: this bridge leads; continuing from the record");
            self.reread().await;
        } else {
            tracing::warn!(leader = ?role.leader, "migration: this bridge no longer leads; it takes no step");
            for (_, w) in self.workers.drain() {
                w.token.cancel();
            }
        }
    }

    /// A follower reads the record and puts its nodes on the routes the
    /// record gives them.
    pub(super) async fn follow(&mut self) {
        match self.store.load().await {
            Ok(state) => {
                let state = state.unwrap_or_default();
                if state != self.state {
                    self.state = state;
                    self.restore_routes();
                }
                self.last_error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "migration: cannot read the record; routes kept");
                self.last_error = Some(e.to_string());
            }
        }
    }

    /// Write the state, trying [`WRITE_ATTEMPTS`] times. On failure the
    /// error is kept for status and the engine retries its steps until a
    /// write lands. A conflict (another writer changed the record) is never
    /// retried: the record is read again and becomes the state
    /// ([`Written::Superseded`]).
    pub(in crate::controller) async fn commit(&mut self) -> Written {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.store.save(&self.state).await {
                Ok(()) => {
                    self.retry = false;
                    return Written::Yes;
                }
                Err(e) if e.is_conflict() => {
                    tracing::error!(error = %e, "migration: state not saved: another writer won");
                    self.last_error = Some(e.to_string());
                    return self.reread().await;
                }
                Err(e) if attempt < WRITE_ATTEMPTS => {
                    tracing::warn!(error = %e, "migration: state not saved; trying again");
                }
                Err(e) => {
                    tracing::error!(error = %e, "migration: state not saved; the step is undone");
                    self.last_error = Some(e.to_string());
                    self.retry = true;
                    return Written::No;
                }
            }
        }
    }

    /// After a conflict: the record as the other writer left it becomes
    /// the state (watchers stopped, routes set from it, steps decided anew
    /// by [`Engine::drive`]). A record that cannot be read is reported and
    /// the step is undone as for any failed write; nothing is overwritten.
    pub(super) async fn reread(&mut self) -> Written {
        match self.store.load().await {
            Ok(state) => {
                tracing::warn!(
                    store = %self.store.describe(),
                    "migration: continuing from the record another writer left"
                );
                for (_, w) in self.workers.drain() {
                    w.token.cancel();
                }
                self.state = state.unwrap_or_default();
                self.restore_routes();
                self.retry = false;
                Written::Superseded
            }
            Err(e) => {
                tracing::error!(error = %e, "migration: the record cannot be read again");
                self.last_error = Some(e.to_string());
                self.retry = true;
                Written::No
            }
        }
    }

    /// Apply `change` and write it; if either fails, the in-memory state is
    /// restored and the rollout is held (unsaved), so nothing moves forward
    /// that was not recorded first. After a conflict the state is the
    /// record as read again.
    pub(in crate::controller) async fn forward(
        &mut self,
        change: impl FnOnce(&mut MigrationState) -> Result<(), TransitionError>,
    ) -> bool {
        let before = self.state.clone();
        if let Err(e) = change(&mut self.state) {
            tracing::error!(error = %e, "migration: refused transition");
            self.last_error = Some(e.to_string());
            return false;
        }
        match self.commit().await {
            Written::Yes => return true,
            Written::Superseded => return false,
            Written::No => {}
        }
        self.state = before;
        if self.state.phase == RunPhase::Running {
            self.state.phase = RunPhase::Paused;
            self.state.pause_reason = Some(format!(
                "cannot write the migration state to {}; fix it, then run `sshbridge migrate resume`",
                self.store.describe()
            ));
        }
        self.stop_shadows();
        false
    }
}
