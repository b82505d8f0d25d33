//! HTTP CONNECT egress, byte-compatible with kube-apiserver's `HTTPConnect`
//! proxy protocol: one CONNECT per connection, `200` then raw bytes both
//! ways, nothing written after the response head before the client writes.
//!
//! Errors are one-line reasons under an HTTP status: 400 malformed, 405 not
//! CONNECT, 403 destination not allowed, 408 head not sent in time, 503 the
//! node's path is down, 502 the node refused the dial, 504 dial timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{head, Dial, EgressError};

/// Largest copy buffer per direction, large enough for full SSH packets
/// (buffers start small and grow only for bulk streams, see core's `copy`).
const COPY_BUFFER: usize = 64 * 1024;

/// Limits on what a client may send before it is served.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head, bytes.
    pub max_request_head: usize,
    /// Time a client has to send its head (and finish TLS, over TCP).
    pub request_head_timeout: Duration,
}

/// How a frontend stops.
#[derive(Clone, Default)]
pub struct Lifecycle {
    /// Cancelled: stop accepting; open streams go on.
    pub stop_accepting: CancellationToken,
    /// Cancelled: cut every open stream now (end of the drain grace).
    pub abort: CancellationToken,
    /// Tracks every connection task, so the daemon can wait for the drain.
    pub tracker: TaskTracker,
    /// Connection tasks that have ended (the memory trim follows it).
    pub finished: Arc<AtomicU64>,
}

impl Lifecycle {
    /// Spawns a connection task on `tracker`; it is counted in `finished`
    /// when it ends, however it ends (done, aborted, or dropped at
    /// shutdown).
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(Counted {
            task,
            _finished: Finished(self.finished.clone()),
        })
    }

    /// [`Lifecycle::spawn`] on another runtime (a node's shard).
    fn spawn_on<F>(&self, task: F, home: &Handle) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let counted = Counted {
            task,
            _finished: Finished(self.finished.clone()),
        };
        self.tracker.spawn_on(counted, home)
    }
}

/// Adds one to its counter when dropped.
struct Finished(Arc<AtomicU64>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A task and its [`Finished`] count. A struct rather than an `async
    /// move` block awaiting the task, which would store the task's future
    /// twice (core/src/tasks.rs).
    struct Counted<F> {
        #[pin]
        task: F,
        _finished: Finished,
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().task.poll(cx)
    }
}

/// Serves CONNECT on a unix socket until `stop_accepting` is cancelled.
pub async fn serve_unix<D: Dial>(
    listener: UnixListener,
    dialer: Arc<D>,
    limits: Limits,
    life: Lifecycle,
) {
    loop {
        let accepted = tokio::select! {
            _ = life.stop_accepting.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                life.spawn(serve_unix_conn(
                    stream,
                    dialer.clone(),
                    limits,
                    life.clone(),
                ));
            }
            Err(e) => accept_error(&e).await,
        }
    }
}

/// Serves CONNECT over mutual TLS on TCP until `stop_accepting` is cancelled.
/// The acceptor's config must require client certificates.
pub async fn serve_tls<D: Dial>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: crate::handshake::HandshakeLimit,
    dialer: Arc<D>,
    limits: Limits,
    life: Lifecycle,
) {
    loop {
        let accepted = tokio::select! {
            _ = life.stop_accepting.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let (dialer, abort, acceptor, handshakes) = (
                    dialer.clone(),
                    life.abort.clone(),
                    acceptor.clone(),
                    handshakes.clone(),
                );
                life.spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let Some(tls) = handshakes.accept(&acceptor, tcp, peer).await else {
                        return;
                    };
                    serve_conn(tls, peer.to_string(), dialer.as_ref(), limits, abort).await
                });
            }
            Err(e) => accept_error(&e).await,
        }
    }
}

/// Out of file descriptors and similar: log, pause briefly, keep serving.
async fn accept_error(e: &std::io::Error) {
    warn!(error = %e, "egress accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves one CONNECT from the unix socket. Once the head names the
/// target, the connection moves to the runtime of the target's path when
/// it has one ([`Dial::home`]), so the stream's bytes stay on one thread.
async fn serve_unix_conn<D: Dial>(
    mut client: UnixStream,
    dialer: Arc<D>,
    limits: Limits,
    life: Lifecycle,
) {
    let Some(req) = read_request(&mut client, "unix", limits).await else {
        return;
    };
    let abort = life.abort.clone();
    let route = dialer.route(&req.host, req.port);
    let Some(home) = route.as_ref().ok().and_then(|r| dialer.home(r)) else {
        return connect(client, req, route, "unix", dialer.as_ref(), abort).await;
    };
    // The socket leaves this runtime's reactor and joins the shard's.
    let client = match client.into_std() {
        Ok(client) => client,
        Err(e) => return debug!(error = %e, "egress client gone before its dial"),
    };
    life.spawn_on(
        async move {
            match UnixStream::from_std(client) {
                Ok(client) => connect(client, req, route, "unix", dialer.as_ref(), abort).await,
                Err(e) => warn!(error = %e, "egress client could not join the node's SSH thread"),
            }
        },
        &home,
    );
}

/// Serves one CONNECT on an accepted connection.
pub async fn serve_conn<S, D>(
    mut client: S,
    peer: String,
    dialer: &D,
    limits: Limits,
    abort: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    D: Dial,
{
    let Some(req) = read_request(&mut client, &peer, limits).await else {
        return;
    };
    let route = dialer.route(&req.host, req.port);
    connect(client, req, route, &peer, dialer, abort).await
}

/// Reads the CONNECT head; on a bad or late head, answers it and returns
/// `None`.
async fn read_request<S>(client: &mut S, peer: &str, limits: Limits) -> Option<head::Connect>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let read = tokio::time::timeout(
        limits.request_head_timeout,
        head::read(client, limits.max_request_head),
    );
    match read.await {
        Ok(Ok(req)) => Some(req),
        Ok(Err(e)) => {
            if let Some(status) = e.http_status() {
                debug!(%peer, status, reason = %e, "egress request refused");
                respond(client, status, &e.to_string()).await;
            }
            None
        }
        Err(_) => {
            let reason = format!(
                "request head not received within {:?} (egress.request_head_timeout)",
                limits.request_head_timeout
            );
            respond(client, 408, &reason).await;
            None
        }
    }
}

/// Dials the request's route, answers, then copies both ways.
async fn connect<S, D>(
    mut client: S,
    req: head::Connect,
    route: Result<D::Route, EgressError>,
    peer: &str,
    dialer: &D,
    abort: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    D: Dial,
{
    let target = crate::router::format_target(&req.host, req.port);
    let started = Instant::now();
    let dialed = match route {
        Ok(route) => tokio::select! {
            _ = abort.cancelled() => return respond(&mut client, 503, "bridge is shutting down").await,
            dialed = dialer.dial(route) => dialed,
        },
        Err(e) => Err(e),
    };
    let mut dialed = match dialed {
        Ok(d) => d,
        Err(e) => {
            let status = e.http_status();
            warn!(%peer, %target, status, reason = %e, "egress dial failed");
            return respond(&mut client, status, &e.to_string()).await;
        }
    };
    debug!(%peer, %target, node = %dialed.node, dial_ms = started.elapsed().as_millis() as u64, "stream open");
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    if !req.early_data.is_empty() && dialed.stream.write_all(&req.early_data).await.is_err() {
        return;
    }
    let copied = tokio::select! {
        _ = abort.cancelled() => Err(std::io::Error::other("cut at the end of the drain grace period")),
        copied = sshbridge_core::copy::bidirectional(&mut client, &mut dialed.stream, COPY_BUFFER) => copied,
    };
    match copied {
        Ok((up, down)) => {
            debug!(%peer, %target, node = %dialed.node, up, down, secs = started.elapsed().as_secs_f64(), "stream closed")
        }
        Err(e) => {
            info!(%peer, %target, node = %dialed.node, error = %e, "stream ended with an error")
        }
    }
}

/// Writes an error response and closes the write half.
async fn respond<S: AsyncWrite + Unpin>(client: &mut S, status: u16, reason: &str) {
    let body = format!("{}\n", reason.replace(['\r', '\n'], " "));
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        status_text(status),
        body.len()
    );
    let _ = client.write_all(head.as_bytes()).await;
    let _ = client.write_all(body.as_bytes()).await;
    let _ = client.shutdown().await;
}

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests;
