//! One `Connect` stream: reads the server's packets and hands them to the
//! dials and connections of this stream. ConnectIDs live and die with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::transport::Link;
use super::{bump, conn, Shared};
use crate::konnectivity::proto::packet::Payload;
use crate::konnectivity::proto::Packet;

/// How a stream ended.
pub(super) enum End {
    /// DRAIN was sent and no connection is left.
    Drained,
    /// The agent is stopping.
    Stopped,
    /// The stream broke or the server ended it.
    Lost(String),
}

/// A target connection as the packet reader sees it.
pub(super) struct ConnEntry {
    /// Bytes towards the target. Taken (dropped) by CLOSE_REQ: the
    /// connection then writes what is queued and closes.
    pub tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// Bytes in `tx` not yet written to the target.
    pub queued: Arc<AtomicUsize>,
    /// Notified each time the target took queued bytes.
    pub drained: Arc<tokio::sync::Notify>,
    /// Cancelling it closes the connection at once; `error` says why.
    pub hard: CancellationToken,
    /// Cancelled by CLOSE_REQ: flush within the grace, then close.
    pub soft: CancellationToken,
    /// The error CLOSE_RSP carries after a hard close.
    pub error: Arc<OnceLock<String>>,
}

/// State of one stream, shared by its reader and its connection tasks.
pub(super) struct Session {
    pub shared: Arc<Shared>,
    /// To the server; connection tasks hold clones through `Arc<Session>`.
    pub out: mpsc::Sender<Packet>,
    pub conns: Mutex<HashMap<i64, ConnEntry>>,
    /// Dials in progress by `random`; cancelling one abandons that dial.
    pub pending: Mutex<HashMap<i64, CancellationToken>>,
    next_id: AtomicI64,
    /// Cancelled when the stream ends: every dial and connection stops.
    pub cancel: CancellationToken,
    /// Dials and connections of this stream.
    pub tracker: TaskTracker,
}

/// A poisoned lock only means another task panicked mid-update of a map;
/// the map itself is still usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// Sends a packet; false when the stream is gone.
    pub async fn send(&self, p: Packet) -> bool {
        self.out.send(p).await.is_ok()
    }
}

/// Serves one stream until it ends.
pub(super) async fn serve(link: Link, shared: &Arc<Shared>) -> End {
    let Link {
        mut inbound,
        outbound,
        _client,
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
/// connection. A full queue holds the stream back (as upstream does) while
/// the target keeps taking bytes; a target that takes none for
/// `stall_timeout` has its connection closed, and only that one (see the
/// module doc of `agent`).
async fn deliver(sess: &Session, id: i64, data: Vec<u8>) -> bool {
    let (tx, queued, drained, hard, error) = {
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
        )
    };
    if hard.is_cancelled() || data.is_empty() {
        return true;
    }
    let (limit, stall) = (sess.shared.cfg.write_buffer, sess.shared.cfg.stall_timeout);
    let mut last = queued.load(Ordering::Relaxed);
    let mut progress = tokio::time::Instant::now();
    while last > 0 && last + data.len() > limit {
        tokio::select! {
            _ = drained.notified() => {}
            _ = tokio::time::sleep_until(progress + stall) => {}
            _ = hard.cancelled() => return true,
            _ = sess.cancel.cancelled() => return true,
        }
        let now = queued.load(Ordering::Relaxed);
        if now < last {
            progress = tokio::time::Instant::now();
        } else if progress.elapsed() >= stall {
            let _ = error.set(format!(
                "agent: the target of connection {id} took no bytes for {stall:?} \
                 ({now} bytes queued, limit {limit}); connection closed"
            ));
            hard.cancel();
            bump(&sess.shared.counters.overflow_closes, 1);
            return true;
        }
        last = now;
    }
    queued.fetch_add(data.len(), Ordering::Relaxed);
    let _ = tx.send(data);
    true
}
