//! One connected agent: its outbound queues, its pending dials, its open
//! connections, and the task that reads its packets.
//!
//! With the `credit` extension the reader never waits: each connection
//! receives at most the window it granted, and grants more as its reader
//! takes bytes. In compatibility mode (an upstream agent) the reader waits
//! for a connection whose buffer is full, within that connection's stall
//! budget (see the module doc of [`crate`]). Every packet the
//! reader sends back (CLOSE_REQ, CLOSE_RSP, CREDIT) goes through the control
//! queue, which is bounded by a count: an agent that lets it grow past
//! [`Limits::max_queued_control`] stopped reading and is disconnected.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::flow::{CreditGate, Extensions, StallBudget};
use super::identifiers::Identifiers;
use super::proto::{packet::Payload, Packet};
use super::stats::NodeStats;
use super::stream::{Inbound, KonnStream};

/// Packets queued towards one agent for DIAL_REQ and DATA. When full,
/// writers wait: the agent's own link is slow, which TCP would do too.
pub(crate) const DATA_QUEUE: usize = 64;

/// Bookkeeping charged per buffered DATA chunk besides its bytes, so that a
/// flood of tiny chunks is bounded as well.
pub(crate) const CHUNK_OVERHEAD: usize = 64;

/// How often a waiting stream re-checks whether others wait behind it.
const RECHECK: Duration = Duration::from_millis(50);

/// The answer to a DIAL_REQ as the reader hands it to the dialer.
pub(crate) enum DialAnswer {
    /// The agent connected; the stream is registered already.
    Connected(KonnStream),
    /// The agent's error text.
    Failed(String),
}

/// A dial waiting for its DIAL_RSP.
pub(crate) struct PendingDial {
    /// Dropping it (agent gone) makes the dialer see the agent vanish.
    pub(crate) answer: oneshot::Sender<DialAnswer>,
    /// The node the dial is for.
    pub(crate) stats: Arc<NodeStats>,
}

/// The receiving side of one open connection, owned by the agent's table.
pub(crate) struct ConnSlot {
    /// Dropping it ends the connection's reads.
    pub(crate) tx: mpsc::UnboundedSender<Inbound>,
    /// Bytes (plus overhead) received and not yet taken by the reader side.
    pub(crate) buffered: Arc<AtomicUsize>,
    /// Notified each time the reader side takes bytes.
    pub(crate) drained: Arc<tokio::sync::Notify>,
    /// The node the connection is for.
    pub(crate) stats: Arc<NodeStats>,
    /// Credit to send towards the agent (extension `credit`).
    pub(crate) gate: Arc<CreditGate>,
    /// Bytes received and not yet granted back (extension `credit`).
    pub(crate) in_flight: Arc<AtomicUsize>,
    /// Compatibility mode: how long this reader kept the stream waiting.
    pub(crate) budget: Arc<Mutex<StallBudget>>,
    /// The agent sent HALF_CLOSE: no more DATA will come.
    pub(crate) peer_done: bool,
}

/// The limits an agent stream runs under (from [`super::Options`] and
/// [`super::Flow`], plus the peer's announced window).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Compatibility mode: most bytes buffered per connection before the
    /// stream waits.
    pub(crate) max_conn_buffer: usize,
    /// Compatibility mode: total waiting one reader may cause per window.
    pub(crate) stall_timeout: Duration,
    /// The window of `stall_timeout`.
    pub(crate) stall_window: Duration,
    /// Our receive window per connection (extension `credit`).
    pub(crate) window: usize,
    /// The agent's receive window per connection: our initial credit.
    pub(crate) peer_window: usize,
    /// Most connections open through the agent at once.
    pub(crate) max_connections: usize,
    /// Most control packets queued towards the agent.
    pub(crate) max_queued_control: usize,
    /// Compatibility mode: after the client's EOF, how long the target
    /// may stay silent before the connection is closed.
    pub(crate) half_close_idle: Duration,
}

/// One agent stream.
pub(crate) struct Agent {
    /// `agentID`.
    pub(crate) id: String,
    /// `agentIdentifiers`.
    pub(crate) identifiers: Identifiers,
    /// Distinguishes this stream from an older one of the same agent ID.
    pub(crate) serial: u64,
    /// When the stream was accepted.
    pub(crate) since: SystemTime,
    /// Set by DRAIN.
    pub(crate) draining: AtomicBool,
    /// DIAL_REQ and DATA towards the agent; dropping every sender ends the queue.
    pub(crate) data_tx: mpsc::Sender<Packet>,
    /// CLOSE_REQ, CLOSE_RSP, DIAL_CLS: never waits, so it is usable from
    /// `Drop` and from the reader.
    pub(crate) control_tx: mpsc::UnboundedSender<Packet>,
    /// Dials by their `random`.
    pub(crate) pending: Mutex<HashMap<i64, PendingDial>>,
    /// Open connections by connectID.
    pub(crate) conns: Mutex<HashMap<i64, ConnSlot>>,
    /// Cancelled when the stream is gone or replaced: ends the outbound
    /// stream and fails everything in flight.
    pub(crate) ended: CancellationToken,
    /// Extensions both sides announced.
    pub(crate) ext: Extensions,
    /// Limits of this stream.
    pub(crate) limits: Limits,
    /// Control packets queued and not yet taken by the outbound stream.
    pub(crate) queued_control: AtomicUsize,
    /// Hub-wide counters of limits hit.
    pub(crate) hits: Arc<super::stats::LimitHits>,
}

impl Agent {
    /// A new agent and the receiving ends of its two outbound queues.
    pub(crate) fn new(
        id: String,
        identifiers: Identifiers,
        serial: u64,
        (ext, limits, hits): (Extensions, Limits, Arc<super::stats::LimitHits>),
    ) -> (
        Arc<Agent>,
        mpsc::Receiver<Packet>,
        mpsc::UnboundedReceiver<Packet>,
    ) {
        let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let agent = Arc::new(Agent {
            id,
            identifiers,
            serial,
            since: SystemTime::now(),
            draining: AtomicBool::new(false),
            data_tx,
            control_tx,
            pending: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            ended: CancellationToken::new(),
            ext,
            limits,
            queued_control: AtomicUsize::new(0),
            hits,
        });
        (agent, data_rx, control_rx)
    }

    /// Whether the agent asked to be preferred less.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Open connections through this agent.
    pub(crate) fn open_connections(&self) -> usize {
        lock(&self.conns).len()
    }

    /// Queues a control packet; a vanished agent needs none. An agent
    /// that lets more than `max_queued_control` pile up has stopped
    /// reading its stream and is disconnected.
    pub(crate) fn control(&self, packet: Packet) {
        let queued = self.queued_control.fetch_add(1, Ordering::AcqRel) + 1;
        if queued > self.limits.max_queued_control {
            if !self.ended.is_cancelled() {
                self.hits.control_backlog.fetch_add(1, Ordering::Relaxed);
                warn!(
                    agent = %self.id,
                    "Konnectivity agent {} disconnected: {queued} control packets queued and not read \
                     (limit [konnectivity] max_queued_control = {}); the agent stopped reading its stream",
                    self.id, self.limits.max_queued_control
                );
                self.end("it stopped reading its stream (control queue full)");
            }
            return;
        }
        let _ = self.control_tx.send(packet);
    }

    /// Whether another connection may open through this agent.
    pub(crate) fn has_room(&self) -> bool {
        self.open_connections() < self.limits.max_connections
    }

    /// Ends the stream: pending dials fail and open connections end with
    /// `reason`, at once.
    pub(crate) fn end(&self, reason: &str) {
        // Cancel first: a dial that registers after the drain below sees it.
        self.ended.cancel();
        let pending: Vec<_> = lock(&self.pending).drain().collect();
        drop(pending);
        let conns: Vec<_> = lock(&self.conns).drain().collect();
        for (_, slot) in conns {
            let _ = slot.tx.send(Inbound::End(Some(format!(
                "Konnectivity agent {} went away: {reason}",
                self.id
            ))));
        }
    }

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

    fn on_dial_response(self: &Arc<Self>, rsp: super::proto::DialResponse) {
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
            let (tx, rx) = mpsc::unbounded_channel();
            let slot = ConnSlot {
                tx,
                buffered: Arc::new(AtomicUsize::new(0)),
                drained: Arc::new(tokio::sync::Notify::new()),
                stats: pending.stats.clone(),
                gate: Arc::new(CreditGate::new(self.limits.peer_window)),
                in_flight: Arc::new(AtomicUsize::new(0)),
                budget: Arc::new(Mutex::new(StallBudget::new(
                    self.limits.stall_timeout,
                    self.limits.stall_window,
                ))),
                peer_done: false,
            };
            let stream = KonnStream::new(self.clone(), rsp.connect_id, rx, &slot);
            lock(&self.conns).insert(rsp.connect_id, slot);
            DialAnswer::Connected(stream)
        };
        // A dialer gone meanwhile drops the stream, which sends CLOSE_REQ.
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

/// Locks a table; a panic elsewhere never leaves it half-updated, so a
/// poisoned lock is still consistent.
pub(crate) use sshbridge_core::lock;
