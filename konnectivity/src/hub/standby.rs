//! Several streams of one agent ID on this bridge. An agent behind a load
//! balancer dials again until it holds every bridge, so a bridge sees a
//! second stream of an agent it already serves: a *duplicate*, which the
//! agent closes as soon as it has read this bridge's `serverID`. Ending the
//! serving stream for it (the newest wins) would leave the agent with
//! nothing here, so a newer stream of the same ID and owner waits as a
//! standby, as upstream's server keeps both and uses the first:
//!
//! - the oldest stream serves; a standby takes over, oldest first, when it
//!   ends;
//! - a standby still open after [`STANDBY_SETTLE`] is a real reconnect (an
//!   agent never keeps two streams to one server), so the serving stream is
//!   stale (its TCP connection half-open): the standby takes over and the
//!   old stream is ended. Without this a reconnected agent would wait for
//!   the HTTP/2 keepalive (up to 30 s) to find the dead stream.

use std::sync::Arc;
use std::time::Duration;

use super::{lock, refresh, Agent, Hub, State};

/// How long a newer stream of an agent ID waits as a standby before it
/// replaces the serving one. An agent closes a duplicate within
/// milliseconds of reading the response headers.
pub const STANDBY_SETTLE: Duration = Duration::from_secs(2);

/// Registers `agent` (its owner already recorded): serving when its ID has
/// no stream here, else a standby behind the others.
pub(super) fn admit(state: &mut State, agent: Arc<Agent>) {
    if state.agents.contains_key(&agent.id) {
        state
            .standby
            .entry(agent.id.clone())
            .or_default()
            .push(agent);
    } else {
        state.agents.insert(agent.id.clone(), agent);
    }
}

/// Removes `agent`, serving or standby. When it served, the oldest standby
/// of its ID serves now; the ID's owner is forgotten with its last stream.
pub(super) fn remove(state: &mut State, agent: &Arc<Agent>) {
    let serving = state
        .agents
        .get(&agent.id)
        .is_some_and(|a| a.serial == agent.serial);
    let waiting = state.standby.get_mut(&agent.id);
    if serving {
        let next = waiting.and_then(|w| (!w.is_empty()).then(|| w.remove(0)));
        match next {
            Some(next) => {
                state.agents.insert(agent.id.clone(), next);
            }
            None => {
                state.agents.remove(&agent.id);
                state.owners.remove(&agent.id);
            }
        }
    } else if let Some(waiting) = waiting {
        waiting.retain(|a| a.serial != agent.serial);
    }
    if state.standby.get(&agent.id).is_some_and(|w| w.is_empty()) {
        state.standby.remove(&agent.id);
    }
}

/// Every standby stream, taken out of the registry (shutdown).
pub(super) fn take_all(state: &mut State) -> Vec<Arc<Agent>> {
    state.standby.drain().flat_map(|(_, w)| w).collect()
}

impl Hub {
    /// Whether `agent`'s stream waits as a standby behind an older stream
    /// of the same ID.
    pub(crate) fn is_standby(&self, agent: &Arc<Agent>) -> bool {
        lock(&self.inner.state)
            .standby
            .get(&agent.id)
            .is_some_and(|w| w.iter().any(|a| a.serial == agent.serial))
    }

    /// `agent`'s stream stayed open for [`STANDBY_SETTLE`] as a standby:
    /// it serves now, and the stream it replaces is ended (with its
    /// connections). Nothing when it no longer waits.
    pub(crate) fn settle(&self, agent: &Arc<Agent>) {
        let old = {
            let mut state = lock(&self.inner.state);
            let Some(waiting) = state.standby.get_mut(&agent.id) else {
                return;
            };
            let Some(at) = waiting.iter().position(|a| a.serial == agent.serial) else {
                return;
            };
            let me = waiting.remove(at);
            if waiting.is_empty() {
                state.standby.remove(&agent.id);
            }
            let old = state.agents.insert(agent.id.clone(), me);
            refresh(&mut state);
            old
        };
        if let Some(old) = old {
            old.end("replaced by a newer stream with the same agent ID");
        }
    }

    /// Streams waiting as standbys, over all agent IDs.
    pub fn standby_streams(&self) -> usize {
        lock(&self.inner.state).standby.values().map(Vec::len).sum()
    }
}
