//! One `Connect` stream: reads the server's packets and hands them to the
//! dials and connections of this stream. ConnectIDs live and die with it.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::state::{lock, Session};
use super::transport::Link;
use super::{bump, conn, Shared};
use crate::flow::StallBudget;
use crate::proto::packet::Payload;
use crate::proto::Packet;

/// How a stream ended.
pub(super) enum End {
    /// DRAIN was sent and no connection is left.
    Drained,
    /// The agent is stopping.
    Stopped,
    /// The stream broke or the server ended it.
    Lost(String),
}

/// Serves one stream until it ends.
pub(super) async fn serve(link: Link, shared: &Arc<Shared>) -> End {
    let Link {
        mut inbound,
        outbound,
        _client,
        ext,
        peer_window,
        ..
    } = link;
    let sess = Arc::new(Session {
        shared: shared.clone(),
        out: outbound,
        conns: Mutex::default(),
        pending: Mutex::default(),
        next_id: AtomicI64::new(0),
        cancel: shared.stop.child_token(),
        tracker: TaskTracker::new(),
        ext,
        peer_window,
    });
    let mut drain_sent = false;
    let end = loop {
        tokio::select! {
            biased;
            _ = shared.stop.cancelled() => break End::Stopped,
            _ = shared.drain.cancelled(), if !drain_sent => {
                drain_sent = true;
                tracing::info!(server = %shared.cfg.server, "sending DRAIN; exiting once open connections are done");
                if !sess.send(Packet::drain()).await {
                    break End::Lost("the stream closed while sending DRAIN".into());
                }
                sess.tracker.close();
            }
            _ = sess.tracker.wait(), if drain_sent => break End::Drained,
            msg = inbound.message() => match msg {
                Ok(Some(p)) => handle(&sess, p).await,
                Ok(None) => break End::Lost("the server closed the stream".into()),
                Err(status) => break End::Lost(status.to_string()),
            },
        }
    };
    sess.cancel.cancel();
    sess.tracker.close();
    // Connection tasks see the cancel at their next await and end.
    if tokio::time::timeout(Duration::from_secs(5), sess.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connection tasks did not stop within 5s");
    }
    if matches!(end, End::Drained) {
        // End the request side after DRAIN, then give the server a moment
        // to end its side, so nothing sent is cut by a reset.
        drop(sess);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
    }
    drop(_client);
    end
}

async fn handle(sess: &Arc<Session>, p: Packet) {
    let Some(payload) = p.payload else {
        tracing::debug!("packet without payload ignored");
        return;
    };
    match payload {
        Payload::DialRequest(req) => {
            // As upstream: every DIAL_REQ takes the next ID, dial or no dial.
            let id = sess.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            bump(&sess.shared.counters.dials, 1);
            let token = sess.cancel.child_token();
            lock(&sess.pending).insert(req.random, token.clone());
            sess.tracker
                .spawn(conn::dial_and_serve(sess.clone(), req, id, token));
        }
        Payload::CloseDial(cls) => {
            if let Some(token) = lock(&sess.pending).remove(&cls.random) {
                tracing::debug!(random = cls.random, "DIAL_CLS: dial abandoned");
                token.cancel();
            }
        }
        Payload::Data(d) => {
            if d.connect_id == 0 {
                tracing::warn!("DATA without connectID ignored");
                return;
            }
            if !deliver(sess, d.connect_id, d.data).await {
                tracing::debug!(connect_id = d.connect_id, "DATA for an unknown connection");
                sess.send(Packet::close_response(
                    d.connect_id,
                    "unrecognized connectID",
                ))
                .await;
            }
        }
        Payload::HalfClose(h) if sess.ext.half_close => {
            // The writer sends what is queued, then shutdown(SHUT_WR).
            if let Some(entry) = lock(&sess.conns).get_mut(&h.connect_id) {
                entry.tx = None;
            }
        }
        Payload::Credit(c) if sess.ext.credit => {
            if let Some(entry) = lock(&sess.conns).get(&c.connect_id) {
                entry.gate.grant(c.bytes);
            }
        }
        Payload::CloseRequest(req) => {
            let known = match lock(&sess.conns).get_mut(&req.connect_id) {
                Some(entry) => {
                    entry.tx = None;
                    entry.soft.cancel();
                    true
                }
                None => false,
            };
            if !known {
                sess.send(Packet::close_response(req.connect_id, "Unknown connectID"))
                    .await;
            }
        }
        other => tracing::debug!("packet ignored by the agent: {other:?}"),
    }
}

/// Queues `data` towards connection `id`; false when there is no such
/// connection. With `credit` it never waits: a server that sends past the
/// connection's window has the connection closed. In compatibility mode a
/// full queue holds the stream back (as upstream does) while the target
/// keeps taking bytes, within the connection's stall budget: a target that
/// kept the stream waiting `stall_timeout` in total within ten times that
/// has its connection closed, and only that one (see the module doc of
/// `agent`).
async fn deliver(sess: &Session, id: i64, data: Vec<u8>) -> bool {
    let (tx, queued, drained, hard, error, in_flight, budget) = {
        let conns = lock(&sess.conns);
        let Some(entry) = conns.get(&id) else {
            return false;
        };
        let Some(tx) = entry.tx.clone() else {
            return true; // closing: late bytes are dropped
        };
        let e = entry;
        (
            tx,
            e.queued.clone(),
            e.drained.clone(),
            e.hard.clone(),
            e.error.clone(),
            e.in_flight.clone(),
            e.budget.clone(),
        )
    };
    if hard.is_cancelled() || data.is_empty() {
        return true;
    }
    if sess.ext.credit {
        let window = sess.shared.cfg.credit_window;
        let sent = in_flight.fetch_add(data.len(), Ordering::AcqRel) + data.len();
        if sent > window {
            let _ = error.set(format!(
                "agent: the server sent {sent} bytes on connection {id} past its credit window \
                 of {window} bytes; connection closed"
            ));
            hard.cancel();
            bump(&sess.shared.counters.overflow_closes, 1);
            return true;
        }
    } else if !wait_for_room(
        sess,
        id,
        data.len(),
        (&queued, &drained, &hard),
        &budget,
        &error,
    )
    .await
    {
        return true;
    }
    queued.fetch_add(data.len(), Ordering::Relaxed);
    let _ = tx.send(data);
    true
}

/// Compatibility mode: waits while connection `id`'s queue has no room
/// for `len` more bytes, within its stall budget. False when the
/// connection was closed meanwhile (budget spent, or cut).
async fn wait_for_room(
    sess: &Session,
    id: i64,
    len: usize,
    (queued, drained, hard): (&AtomicUsize, &tokio::sync::Notify, &CancellationToken),
    budget: &Mutex<StallBudget>,
    error: &OnceLock<String>,
) -> bool {
    let limit = sess.shared.cfg.write_buffer;
    let full = || {
        let q = queued.load(Ordering::Relaxed);
        q > 0 && q + len > limit
    };
    if !full() {
        return true;
    }
    let start = tokio::time::Instant::now();
    let mut left = lock(budget).left(start);
    let mut charged = Duration::ZERO;
    while full() {
        if left.is_zero() {
            lock(budget).charge(start, charged);
            let stall = sess.shared.cfg.stall_timeout;
            let _ = error.set(format!(
                "agent: the target of connection {id} took no bytes for {stall:?} in total \
                 while the stream waited for it ({} bytes queued, limit {limit}); connection closed",
                queued.load(Ordering::Relaxed)
            ));
            hard.cancel();
            bump(&sess.shared.counters.overflow_closes, 1);
            return false;
        }
        // Charged only while another connection or dial of the stream
        // waits behind it, as on the server.
        let others = lock(&sess.conns).len() > 1 || !lock(&sess.pending).is_empty();
        let tick = tokio::time::Instant::now();
        let nap = if others { left.min(RECHECK) } else { RECHECK };
        tokio::select! {
            _ = drained.notified() => {}
            _ = tokio::time::sleep(nap) => {}
            _ = hard.cancelled() => return false,
            _ = sess.cancel.cancelled() => return false,
        }
        if others {
            let waited = tick.elapsed();
            charged += waited;
            left = left.saturating_sub(waited);
        }
    }
    lock(budget).charge(start, charged);
    true
}

/// How often a waiting stream re-checks whether others wait behind it.
const RECHECK: Duration = Duration::from_millis(50);
