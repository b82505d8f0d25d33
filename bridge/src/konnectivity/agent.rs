//! One connected agent: its outbound queues, its pending dials, its open
//! connections, and the task that reads its packets.
//!
//! The reader never waits on anything but the agent's own stream: packets
//! for a connection go into that connection's buffer without blocking, and
//! every packet the reader sends back (CLOSE_REQ, CLOSE_RSP) goes through the
//! unbounded control queue. A connection whose buffer is full is closed
//! (see the module doc of [`crate::konnectivity`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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
    /// Most bytes buffered per connection before the stream waits.
    pub(crate) max_conn_buffer: usize,
    /// How long the stream waits for a full connection's reader.
    pub(crate) stall_timeout: Duration,
}

impl Agent {
    /// A new agent and the receiving ends of its two outbound queues.
    pub(crate) fn new(
        id: String,
        identifiers: Identifiers,
        serial: u64,
        (max_conn_buffer, stall_timeout): (usize, Duration),
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
            max_conn_buffer,
            stall_timeout,
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

    /// Queues a control packet; a vanished agent needs none.
    pub(crate) fn control(&self, packet: Packet) {
        let _ = self.control_tx.send(packet);
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
            let buffered = Arc::new(AtomicUsize::new(0));
            let drained = Arc::new(tokio::sync::Notify::new());
            let slot = ConnSlot {
                tx,
                buffered: buffered.clone(),
                drained: drained.clone(),
                stats: pending.stats.clone(),
            };
            lock(&self.conns).insert(rsp.connect_id, slot);
            DialAnswer::Connected(KonnStream::new(
                self.clone(),
                rsp.connect_id,
                rx,
                (buffered, drained),
                pending.stats.clone(),
            ))
        };
        // A dialer gone meanwhile drops the stream, which sends CLOSE_REQ.
        let _ = pending.answer.send(answer);
    }

    /// Waits until connection `connect_id` has room for `len` more bytes:
    /// the agent's stream is not read meanwhile, which slows the agent (and
    /// behind it the target) to this reader's pace. Gives up after
    /// `stall_timeout` without progress; `on_data` then closes the
    /// connection.
    pub(crate) async fn room_for(&self, connect_id: i64, len: usize) {
        let Some((buffered, drained)) = lock(&self.conns)
            .get(&connect_id)
            .map(|s| (s.buffered.clone(), s.drained.clone()))
        else {
            return;
        };
        let charge = len + CHUNK_OVERHEAD;
        let mut last = buffered.load(Ordering::Acquire);
        let mut progress = tokio::time::Instant::now();
        while last > 0 && last + charge > self.max_conn_buffer {
            tokio::select! {
                _ = drained.notified() => {}
                _ = tokio::time::sleep_until(progress + self.stall_timeout) => {}
                _ = self.ended.cancelled() => return,
            }
            let now = buffered.load(Ordering::Acquire);
            if now < last {
                progress = tokio::time::Instant::now();
            } else if progress.elapsed() >= self.stall_timeout
                || !lock(&self.conns).contains_key(&connect_id)
            {
                return;
            }
            last = now;
        }
    }

    fn on_data(&self, connect_id: i64, data: Vec<u8>) {
        let overflow = {
            let conns = lock(&self.conns);
            let Some(slot) = conns.get(&connect_id) else {
                return debug!(agent = %self.id, connect_id, "DATA for an unknown connection");
            };
            let charge = data.len() + CHUNK_OVERHEAD;
            let held = slot.buffered.load(Ordering::Acquire);
            if held + charge > self.max_conn_buffer {
                Some(slot.stats.clone())
            } else {
                slot.buffered.fetch_add(charge, Ordering::AcqRel);
                let _ = slot.tx.send(Inbound::Data(Bytes::from(data)));
                None
            }
        };
        if let Some(stats) = overflow {
            stats.overflow_closes.fetch_add(1, Ordering::Relaxed);
            let reason = format!(
                "connection {connect_id} through Konnectivity agent {} closed: its reader took no bytes \
                 for {:?} with {} bytes buffered (Konnectivity has no flow control, so a reader that \
                 stops is cut off rather than stall the agent's other connections longer)",
                self.id, self.stall_timeout, self.max_conn_buffer
            );
            warn!(agent = %self.id, connect_id, "{reason}");
            self.close_conn(connect_id, Some(reason), true);
        }
    }

    /// Ends connection `connect_id` for its reader; with `tell_agent`, also
    /// sends CLOSE_REQ.
    fn close_conn(&self, connect_id: i64, error: Option<String>, tell_agent: bool) {
        let slot = lock(&self.conns).remove(&connect_id);
        if let Some(slot) = slot {
            let _ = slot.tx.send(Inbound::End(error));
            if tell_agent {
                self.control(Packet::close_request(connect_id));
            }
        }
    }
}

/// Locks a table; a panic elsewhere never leaves it half-updated, so a
/// poisoned lock is still consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
