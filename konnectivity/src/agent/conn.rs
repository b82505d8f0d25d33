//! One dial and, when it succeeds, the connection to its target: a task
//! that owns both halves of the TCP stream.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sshbridge_core::copy::Growing;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::state::{lock, ConnEntry, Session};
use super::{bump, AllowList};
use crate::flow::{grant_batch, CreditGate, StallBudget};
use crate::proto::{DialRequest, Packet};

/// Bytes read from a target per DATA packet, as upstream.
const CHUNK: usize = 32 * 1024;

/// Why a dial failed; the text goes back in DIAL_RSP, worded like Go's
/// net errors that upstream's agent sends (`dial tcp ADDR: ...`).
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("dial {protocol} {address}: only tcp is supported")]
    Protocol { protocol: String, address: String },
    #[error("dial tcp {address}: address not allowed by the agent's --allow list")]
    Denied { address: String },
    #[error("dial tcp {address}: lookup: {source}")]
    Resolve { address: String, source: io::Error },
    #[error("dial tcp {address}: i/o timeout (no answer within {secs}s)")]
    Timeout { address: String, secs: f64 },
    #[error("dial tcp {address}: connect: {source}")]
    Connect { address: String, source: io::Error },
}

/// Dials `req.address` and, on success, serves the connection as `id`.
/// `token` is the dial's DIAL_CLS (and stream-end) cancellation.
pub(super) async fn dial_and_serve(
    sess: Arc<Session>,
    req: DialRequest,
    id: i64,
    token: CancellationToken,
) {
    let cfg = &sess.shared.cfg;
    let counters = &sess.shared.counters;
    let result = tokio::select! {
        r = dial(&req, &cfg.allow, cfg.dial_timeout) => r,
        _ = token.cancelled() => Err(None),
    };
    lock(&sess.pending).remove(&req.random);
    if token.is_cancelled() {
        // DIAL_CLS (or the stream ended): nobody waits for an answer.
        if !sess.cancel.is_cancelled() {
            bump(&counters.dials_cancelled, 1);
        }
        return;
    }
    let stream = match result {
        Ok(s) => s,
        Err(e) => {
            bump(&counters.dial_failures, 1);
            if matches!(e, Some(DialError::Denied { .. })) {
                bump(&counters.dials_denied, 1);
            }
            let e = e.map(|e| e.to_string()).unwrap_or_default();
            tracing::info!(random = req.random, address = %req.address, "dial failed: {e}");
            sess.send(Packet::dial_response(req.random, 0, e)).await;
            return;
        }
    };
    let queued = Arc::new(AtomicUsize::new(0));
    let drained = Arc::new(tokio::sync::Notify::new());
    let (tx, rx) = mpsc::unbounded_channel();
    let stall = cfg.stall_timeout;
    let entry = ConnEntry {
        tx: Some(tx),
        queued: queued.clone(),
        drained: drained.clone(),
        hard: sess.cancel.child_token(),
        soft: CancellationToken::new(),
        error: Arc::new(OnceLock::new()),
        gate: Arc::new(CreditGate::new(sess.peer_window)),
        in_flight: Arc::new(AtomicUsize::new(0)),
        budget: Arc::new(Mutex::new(StallBudget::new(stall, stall * 10))),
    };
    let (hard, soft, error) = (entry.hard.clone(), entry.soft.clone(), entry.error.clone());
    let flow = Flow {
        gate: entry.gate.clone(),
        in_flight: entry.in_flight.clone(),
    };
    // Registered before DIAL_RSP goes out, so DATA right behind it finds it.
    lock(&sess.conns).insert(id, entry);
    bump(&counters.open, 1);
    tracing::debug!(connect_id = id, address = %req.address, "connection established");
    if sess.send(Packet::dial_response(req.random, id, "")).await {
        let why = serve(
            &sess,
            id,
            &req.address,
            stream,
            rx,
            (&queued, &drained),
            &flow,
            (&hard, &soft),
            &error,
        )
        .await;
        lock(&sess.conns).remove(&id);
        if !sess.cancel.is_cancelled() {
            sess.send(Packet::close_response(id, why.unwrap_or_default()))
                .await;
        }
    } else {
        lock(&sess.conns).remove(&id);
    }
    counters.open.fetch_sub(1, Ordering::Relaxed);
}

/// Resolves and connects within `timeout`, trying only allowed addresses.
/// `Err(None)` is never returned here; it marks a cancelled dial above.
async fn dial(
    req: &DialRequest,
    allow: &AllowList,
    timeout: Duration,
) -> Result<TcpStream, Option<DialError>> {
    let address = req.address.clone();
    if !req.protocol.is_empty() && req.protocol != "tcp" {
        return Err(Some(DialError::Protocol {
            protocol: req.protocol.clone(),
            address,
        }));
    }
    let attempt = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&address)
            .await
            .map_err(|source| DialError::Resolve {
                address: address.clone(),
                source,
            })?
            .filter(|a| allow.allows(a))
            .collect();
        if addrs.is_empty() {
            return Err(DialError::Denied {
                address: address.clone(),
            });
        }
        let mut last = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(DialError::Connect {
            address: address.clone(),
            source: last.unwrap_or_else(|| io::Error::other("no address")),
        })
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r.map_err(Some),
        Err(_) => Err(Some(DialError::Timeout {
            address: address.clone(),
            secs: timeout.as_secs_f64(),
        })),
    }
}

/// A connection's credit state (extension `credit`).
struct Flow {
    gate: Arc<CreditGate>,
    in_flight: Arc<AtomicUsize>,
}

/// Pumps bytes both ways until the target closes, the server closes, or
/// the connection is cut. Returns the error CLOSE_RSP carries, if any.
/// With `half-close`, the target's EOF is sent as HALF_CLOSE and the
/// server's HALF_CLOSE becomes `shutdown(SHUT_WR)`; the connection ends
/// when both directions have.
#[allow(clippy::too_many_arguments)]
async fn serve(
    sess: &Session,
    id: i64,
    address: &str,
    stream: TcpStream,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    (queued, drained): (&AtomicUsize, &tokio::sync::Notify),
    flow: &Flow,
    (hard, soft): (&CancellationToken, &CancellationToken),
    error: &OnceLock<String>,
) -> Option<String> {
    let counters = &sess.shared.counters;
    let (credit, half_close) = (sess.ext.credit, sess.ext.half_close);
    let batch = grant_batch(sess.shared.cfg.credit_window);
    let (mut rd, mut wr) = stream.into_split();
    let reader = async {
        // Starts small: most connections carry a few KiB (core's `copy`).
        let mut buf = Growing::new(CHUNK);
        loop {
            let want = if credit {
                flow.gate.take(buf.size()).await
            } else {
                buf.size()
            };
            let got = buf.read_up_to(&mut rd, want).await.map(<[u8]>::len);
            if credit {
                flow.gate.put_back(want - got.as_ref().map_or(0, |n| *n));
            }
            match got {
                // The target closed: upstream answers with CLOSE_RSP.
                Ok(0) => return None,
                Ok(n) => {
                    // A target with Nagle on holds its next small write
                    // for our ACK; send it now (see core's `quickack`).
                    sshbridge_core::quickack::rearm(rd.as_ref());
                    bump(&counters.bytes_from, n as u64);
                    if !sess.send(Packet::data(id, buf.last().to_vec())).await {
                        return None;
                    }
                }
                Err(e) => return Some(format!("agent: read from {address}: {e}")),
            }
        }
    };
    let writer = async {
        let mut consumed = 0;
        while let Some(chunk) = rx.recv().await {
            if let Err(e) = wr.write_all(&chunk).await {
                return Some(format!("agent: write to {address}: {e}"));
            }
            queued.fetch_sub(chunk.len(), Ordering::Relaxed);
            drained.notify_one();
            bump(&counters.bytes_to, chunk.len() as u64);
            if credit {
                consumed += chunk.len();
                if consumed >= batch {
                    flow.in_flight.fetch_sub(consumed, Ordering::AcqRel);
                    sess.send(Packet::credit(id, consumed as u64)).await;
                    consumed = 0;
                }
            }
        }
        // CLOSE_REQ took the queue and everything queued is written; or,
        // with half-close, the server sent HALF_CLOSE.
        if half_close && !soft.is_cancelled() {
            if let Err(e) = wr.shutdown().await {
                return Some(format!("agent: shutdown towards {address}: {e}"));
            }
        }
        None
    };
    tokio::pin!(reader, writer);
    let grace = sess.shared.cfg.close_grace;
    let (mut read_done, mut write_done) = (false, false);
    loop {
        // A hard close wins over whatever else finished in the same
        // wake-up, so its reason is the one reported.
        tokio::select! {
            biased;
            _ = hard.cancelled() => return error.get().cloned(),
            _ = soft.cancelled() => {
                if write_done {
                    return None;
                }
                return match tokio::time::timeout(grace, &mut writer).await {
                    Ok(e) => e,
                    Err(_) => Some(format!("agent: {address} did not take the last bytes within {grace:?}")),
                };
            }
            e = &mut reader, if !read_done => {
                if e.is_some() || !half_close {
                    return e;
                }
                // The target's EOF: tell the server, keep writing.
                read_done = true;
                if !sess.send(Packet::half_close(id)).await || write_done {
                    return None;
                }
            }
            e = &mut writer, if !write_done => {
                if e.is_some() || !half_close || soft.is_cancelled() {
                    return e;
                }
                write_done = true;
                if read_done {
                    return None;
                }
            }
        }
    }
}
