//! What an agent sends: DIAL_RSP, DATA, CLOSE_REQ/CLOSE_RSP, HALF_CLOSE,
//! CREDIT and DRAIN, handled by the task that reads its stream
//! (`server::read_agent`) without waiting, and the one wait it may do:
//! compatibility mode's [`Agent::room_for`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{lock, Agent, DialAnswer, Opened};
use crate::conn::{ConnSlot, Inbound, CHUNK_OVERHEAD};
use crate::flow::StallBudget;
use crate::proto::{packet::Payload, DialResponse, Packet};

/// How often a waiting stream re-checks whether others wait behind it.
const RECHECK: Duration = Duration::from_millis(50);

impl Agent {
    /// Handles one packet from the agent. Never waits. Returns true when
    /// the agent started draining (the node's liveness changed).
    pub(crate) fn handle(self: &Arc<Self>, packet: Packet) -> bool {
        match packet.payload {
            Some(Payload::DialResponse(rsp)) => self.on_dial_response(rsp),
            Some(Payload::Data(data)) => {
                if !data.error.is_empty() {
                    self.close_conn(data.connect_id, Some(data.error), true);
                } else {
                    self.on_data(data.connect_id, data.data);
                }
            }
            Some(Payload::CloseResponse(rsp)) => {
                let error = (!rsp.error.is_empty()).then_some(rsp.error);
                self.close_conn(rsp.connect_id, error, false);
            }
            Some(Payload::CloseRequest(req)) => {
                self.close_conn(req.connect_id, None, false);
                self.control(Packet::close_response(req.connect_id, ""));
            }
            Some(Payload::HalfClose(h)) if self.ext.half_close => self.on_half_close(h.connect_id),
            Some(Payload::Credit(c)) if self.ext.credit => {
                if let Some(slot) = lock(&self.conns).get(&c.connect_id) {
                    slot.gate.grant(c.bytes);
                }
            }
            Some(Payload::Drain(_)) => {
                info!(agent = %self.id, "Konnectivity agent is draining");
                return !self.draining.swap(true, Ordering::Relaxed);
            }
            other => debug!(agent = %self.id, packet = ?other, "ignored packet from agent"),
        }
        false
    }

    fn on_dial_response(self: &Arc<Self>, rsp: DialResponse) {
        let pending = lock(&self.pending).remove(&rsp.random);
        let Some(pending) = pending else {
            // Abandoned (DIAL_CLS crossed the answer): close what was opened.
            if rsp.error.is_empty() && rsp.connect_id != 0 {
                self.control(Packet::close_request(rsp.connect_id));
            }
            return;
        };
        let answer = if !rsp.error.is_empty() {
            DialAnswer::Failed(rsp.error)
        } else if rsp.connect_id == 0 {
            DialAnswer::Failed("agent answered without a connection ID".into())
        } else {
            // Register before handing over, so DATA right behind the
            // answer finds its connection.
            let budget = StallBudget::new(self.limits.stall_timeout, self.limits.stall_window);
            let (slot, reader) =
                ConnSlot::open(pending.stats.clone(), self.limits.peer_window, budget);
            lock(&self.conns).insert(rsp.connect_id, slot);
            DialAnswer::Connected(Opened {
                agent: self.clone(),
                connect_id: rsp.connect_id,
                reader: Some(reader),
            })
        };
        // A dialer gone meanwhile drops the answer, which sends CLOSE_REQ.
        let _ = pending.answer.send(answer);
    }

    /// Compatibility mode: waits until connection `connect_id` has room
    /// for `len` more bytes. The agent's stream is not read meanwhile,
    /// which slows the agent (and behind it the target) to this reader's
    /// pace, but only within the connection's stall budget: once its
    /// reader has kept the stream waiting `stall_timeout` in total within
    /// `stall_window` while another connection or a dial of the agent was
    /// open, this returns and `on_data` closes the connection. A reader
    /// alone on its agent slows only itself and is not charged.
    pub(crate) async fn room_for(&self, connect_id: i64, len: usize) {
        if self.ext.credit {
            return;
        }
        let Some((buffered, drained, budget)) = lock(&self.conns)
            .get(&connect_id)
            .map(|s| (s.buffered.clone(), s.drained.clone(), s.budget.clone()))
        else {
            return;
        };
        let charge = len + CHUNK_OVERHEAD;
        let full = || {
            let held = buffered.load(Ordering::Acquire);
            held > 0 && held + charge > self.limits.max_conn_buffer
        };
        if !full() {
            return;
        }
        let start = Instant::now();
        let mut left = lock(&budget).left(start);
        let mut charged = Duration::ZERO;
        while full() && !left.is_zero() {
            // The wait costs budget only while someone else waits behind
            // it: another connection, or a dial (a health probe) in flight.
            let others = lock(&self.conns).len() > 1 || !lock(&self.pending).is_empty();
            let tick = Instant::now();
            let nap = if others { left.min(RECHECK) } else { RECHECK };
            tokio::select! {
                _ = drained.notified() => {}
                _ = tokio::time::sleep(nap) => {}
                _ = self.ended.cancelled() => break,
            }
            if others {
                let waited = tick.elapsed();
                charged += waited;
                left = left.saturating_sub(waited);
            }
            if !lock(&self.conns).contains_key(&connect_id) {
                break;
            }
        }
        lock(&budget).charge(start, charged);
    }

    fn on_data(&self, connect_id: i64, data: Vec<u8>) {
        let overflow = {
            let conns = lock(&self.conns);
            let Some(slot) = conns.get(&connect_id) else {
                return debug!(agent = %self.id, connect_id, "DATA for an unknown connection");
            };
            let charge = data.len() + CHUNK_OVERHEAD;
            let over = if self.ext.credit {
                let sent = slot.in_flight.fetch_add(data.len(), Ordering::AcqRel) + data.len();
                sent > self.limits.window
            } else {
                let held = slot.buffered.load(Ordering::Acquire);
                held + charge > self.limits.max_conn_buffer
            };
            if over {
                Some(slot.stats.clone())
            } else {
                slot.buffered.fetch_add(charge, Ordering::AcqRel);
                let _ = slot.tx.send(Inbound::Data(Bytes::from(data)));
                None
            }
        };
        let Some(stats) = overflow else { return };
        let reason = if self.ext.credit {
            stats.credit_violations.fetch_add(1, Ordering::Relaxed);
            format!(
                "connection {connect_id} through Konnectivity agent {} closed: the agent sent past \
                 the connection's credit window of {} bytes (a bug in the agent)",
                self.id, self.limits.window
            )
        } else {
            stats.overflow_closes.fetch_add(1, Ordering::Relaxed);
            format!(
                "connection {connect_id} through Konnectivity agent {} closed: its reader took no \
                 bytes for {:?} in total within {:?} while the agent's stream waited for it with {} \
                 bytes buffered \
                 (the agent speaks no per-connection flow control, so a reader that falls behind \
                 is cut off rather than stall the agent's other connections longer; [konnectivity] \
                 stall_timeout)",
                self.id, self.limits.stall_timeout, self.limits.stall_window, self.limits.max_conn_buffer
            )
        };
        warn!(agent = %self.id, connect_id, "{reason}");
        self.close_conn(connect_id, Some(reason), true);
    }

    /// HALF_CLOSE from the agent: the target sent EOF. The reader sees the
    /// end; the connection stays open for writing.
    fn on_half_close(&self, connect_id: i64) {
        if let Some(slot) = lock(&self.conns).get_mut(&connect_id) {
            slot.peer_done = true;
            let _ = slot.tx.send(Inbound::End(None));
        }
    }

    /// Ends connection `connect_id` for its reader; with `tell_agent`, also
    /// sends CLOSE_REQ.
    fn close_conn(&self, connect_id: i64, error: Option<String>, tell_agent: bool) {
        let slot = lock(&self.conns).remove(&connect_id);
        if let Some(slot) = slot {
            slot.gate.wake();
            let _ = slot.tx.send(Inbound::End(error));
            if tell_agent {
                self.control(Packet::close_request(connect_id));
            }
        }
    }
}
