//! Which Konnectivity servers the agent holds a stream to, how many it
//! should hold, and how long it waits before the next dial: upstream's
//! agent "client set" rules, kept apart from the sockets so that they are
//! tested on their own.
//!
//! Every server behind the agent's one address (a load balancer in front of
//! several bridges) answers a stream with its `serverID` and `serverCount`.
//! The agent dials again through the same address until it holds
//! `serverCount` distinct `serverID`s; a stream to a server it already holds
//! is a *duplicate* and is closed at once; a lost stream leaves a gap that
//! the next dial fills. The count it aims for is the `serverCount` of the
//! last server it *added* (a duplicate's count is ignored, as upstream
//! does). (Counting server Leases instead, upstream's
//! `--count-server-leases`, is not implemented.)
//!
//! Delays (upstream's sync loop, `--sync-interval` 1 s, `--sync-interval-cap`
//! 10 s): after a server was added, while every server is held, and after a
//! duplicate while servers are still missing, the next check comes after
//! the sync interval (±10 %) and the backoff starts over; after a failed
//! dial, or a duplicate when nothing is missing (`--sync-forever`), the
//! delay grows by 1.5 per attempt up to the cap.

use std::collections::BTreeSet;
use std::time::Duration;

use sshbridge_core::backoff::Backoff;

/// Growth of the delay per failed attempt (upstream: 1.5).
pub const SYNC_FACTOR: f64 = 1.5;
/// Spread of each delay (upstream: 10 %).
pub const SYNC_JITTER: f64 = 0.1;

/// The servers held and the count aimed for.
#[derive(Debug, Default)]
pub(super) struct ServerSet {
    held: BTreeSet<String>,
    /// `serverCount` of the last server added; `None` before the first.
    from_responses: Option<usize>,
}

/// A stream to a server already held; the new stream is to be closed.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Duplicate(pub String);

/// What one turn of the sync loop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Nothing to dial: every server is held.
    Complete,
    /// A new server was added.
    Added,
    /// The dial reached a server already held.
    Duplicate,
    /// The dial failed.
    Failed,
}

impl ServerSet {
    /// The servers the agent should hold: the last `serverCount`
    /// received; `None` before the first.
    pub fn wanted(&self) -> Option<usize> {
        self.from_responses
    }

    /// Distinct servers held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The `serverID`s held, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.held.iter().cloned().collect()
    }

    /// Whether every wanted server is held (false while the count is
    /// unknown).
    pub fn complete(&self) -> bool {
        self.wanted().is_some_and(|w| self.held.len() >= w)
    }

    /// Whether the next turn dials: a server is missing, the count is
    /// unknown, or `sync_forever` (which finds a count that grew).
    pub fn should_dial(&self, sync_forever: bool) -> bool {
        sync_forever || !self.complete()
    }

    /// Adds a stream to `server_id`, which announced `count` (`None`: no
    /// usable `serverCount` header). A server already held is refused.
    pub fn add(&mut self, server_id: &str, count: Option<usize>) -> Result<(), Duplicate> {
        if !self.held.insert(server_id.to_string()) {
            return Err(Duplicate(server_id.to_string()));
        }
        if let Some(count) = count {
            self.from_responses = Some(count);
        }
        Ok(())
    }

    /// Forgets `server_id` (its stream ended); false when it was not held.
    pub fn remove(&mut self, server_id: &str) -> bool {
        self.held.remove(server_id)
    }
}

/// The delay between turns of the sync loop.
#[derive(Debug)]
pub(super) struct SyncDelay {
    backoff: Backoff,
}

impl SyncDelay {
    /// Delays from `cfg` (the agent's defaults: upstream's 1 s growing by
    /// [`SYNC_FACTOR`] up to 10 s, spread by [`SYNC_JITTER`]).
    pub fn new(cfg: &sshbridge_config::Backoff) -> SyncDelay {
        SyncDelay {
            backoff: Backoff::new(cfg),
        }
    }

    /// The delay after a turn that ended with `outcome`, the set being
    /// `complete` afterwards.
    pub fn after(&mut self, outcome: Outcome, complete: bool) -> Duration {
        match outcome {
            Outcome::Failed => self.backoff.next_delay(),
            Outcome::Duplicate if complete => self.backoff.next_delay(),
            Outcome::Complete | Outcome::Added | Outcome::Duplicate => {
                self.backoff.reset();
                let d = self.backoff.next_delay();
                self.backoff.reset();
                d
            }
        }
    }
}

#[cfg(test)]
#[path = "servers_tests.rs"]
mod tests;
