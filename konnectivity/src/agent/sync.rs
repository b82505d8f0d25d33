//! The agent's sync loop: dials the server address until it holds a stream
//! to every distinct server behind it ([`super::servers`] has the rules),
//! serves each stream in a task of its own, and dials again when one ends.
//! Each stream carries only the dials of the server at its other end.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;

use super::servers::{Outcome, ServerSet, SyncDelay};
use super::stats::bump;
use super::{session, transport, Servers, Shared};

/// What the loop publishes to the agent's handle.
pub(super) struct Watches {
    /// The servers held.
    pub servers: watch::Sender<Servers>,
    /// Whether at least one is.
    pub connected: watch::Sender<bool>,
}

/// A stream's task tells the loop which server it served and how it ended.
type Ended = (String, session::End);

/// Runs until the agent stops, or drained and every stream is done.
pub(super) async fn run(shared: Arc<Shared>, watches: Watches) {
    let cfg = &shared.cfg;
    let mut set = ServerSet::default();
    let mut delay = SyncDelay::new(&cfg.backoff);
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<Ended>();
    let streams = TaskTracker::new();
    let mut wanted = None;
    'sync: loop {
        let draining = shared.drain.is_cancelled();
        let outcome = if draining || !set.should_dial(cfg.sync_forever) {
            Outcome::Complete
        } else {
            let attempt = tokio::select! {
                r = transport::connect(cfg) => r,
                _ = shared.stop.cancelled() => break 'sync,
            };
            match attempt {
                Ok(link) => match set.add(&link.server_id, link.server_count) {
                    Ok(()) => {
                        bump(&shared.counters.connects, 1);
                        tracing::info!(
                            server = %cfg.server, server_id = %link.server_id,
                            server_count = ?link.server_count, agent_id = %cfg.agent_id,
                            extensions = %link.ext.header(), flow_control = link.ext.mode(),
                            holding = set.held(), wanted = ?set.wanted(), servers = ?set.ids(),
                            "connected to the Konnectivity server"
                        );
                        let (shared, tx) = (shared.clone(), ended_tx.clone());
                        let id = link.server_id.clone();
                        streams.spawn(async move {
                            let end = session::serve(link, &shared).await;
                            let _ = tx.send((id, end));
                        });
                        Outcome::Added
                    }
                    Err(dup) => {
                        // Dropping the link closes the stream and its
                        // HTTP/2 connection at once.
                        drop(link);
                        bump(&shared.counters.duplicates, 1);
                        tracing::debug!(
                            server = %cfg.server, server_id = %dup.0, holding = set.held(),
                            wanted = ?set.wanted(), "duplicate server: stream closed"
                        );
                        Outcome::Duplicate
                    }
                },
                Err(e) => {
                    bump(&shared.counters.connect_failures, 1);
                    tracing::warn!(server = %cfg.server, holding = set.held(), wanted = ?set.wanted(), "{e}");
                    Outcome::Failed
                }
            }
        };
        if set.wanted() != wanted {
            if wanted.is_some() {
                tracing::warn!(server = %cfg.server, was = ?wanted, now = ?set.wanted(), "the Konnectivity server count changed");
            }
            wanted = set.wanted();
        }
        publish(&shared, &set, &watches);
        let pause = tokio::time::sleep(delay.after(outcome, set.complete()));
        tokio::pin!(pause);
        loop {
            if shared.drain.is_cancelled() && set.held() == 0 {
                break 'sync;
            }
            tokio::select! {
                _ = &mut pause, if !shared.drain.is_cancelled() => break,
                _ = shared.stop.cancelled() => break 'sync,
                _ = shared.drain.cancelled(), if set.held() == 0 => break 'sync,
                Some((id, end)) = ended_rx.recv() => {
                    set.remove(&id);
                    publish(&shared, &set, &watches);
                    match end {
                        session::End::Drained => tracing::info!(
                            server = %cfg.server, server_id = %id,
                            "drained: no connection left on this server's stream"
                        ),
                        session::End::Stopped => break 'sync,
                        session::End::Lost(why) => tracing::warn!(
                            server = %cfg.server, server_id = %id, holding = set.held(),
                            wanted = ?set.wanted(),
                            "stream to the Konnectivity server ended: {why}; dialing again"
                        ),
                    }
                }
            }
        }
    }
    shared.stop.cancel();
    streams.close();
    streams.wait().await;
    set = ServerSet::default();
    publish(&shared, &set, &watches);
    if shared.drain.is_cancelled() {
        tracing::info!(server = %cfg.server, "drained: every stream is done, exiting");
    }
}

/// Publishes the held servers to the handle and the counters.
fn publish(shared: &Shared, set: &ServerSet, watches: &Watches) {
    let c = &shared.counters;
    c.held
        .store(set.held() as u64, std::sync::atomic::Ordering::Relaxed);
    c.wanted.store(
        set.wanted().unwrap_or(0) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let now = Servers {
        ids: set.ids(),
        wanted: set.wanted(),
    };
    let up = set.held() > 0;
    watches.servers.send_if_modified(|s| {
        let changed = *s != now;
        *s = now;
        changed
    });
    watches
        .connected
        .send_if_modified(|c| std::mem::replace(c, up) != up);
}
