//! The admin HTTP server: `/livez`, `/readyz`, `/healthz`, `/metrics`,
//! `/report`, on a unix socket (mode 0600) or a TCP address.
//!
//! Plain HTTP/1.1, GET only, one request per connection. The server knows
//! nothing of tunnels: it asks an [`AdminState`] for each answer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// One named check of `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short name, e.g. `egress` or `node-a`.
    pub name: String,
    /// `Err(reason)` when failing.
    pub result: Result<(), String>,
}

/// What the admin server serves; implemented by the daemon.
pub trait AdminState: Send + Sync + 'static {
    /// Checks that make the process ready to serve egress.
    fn readiness(&self) -> Vec<Check>;
    /// Prometheus text exposition.
    fn metrics(&self) -> String;
    /// The report document, JSON.
    fn report(&self) -> impl Future<Output = String> + Send;
}

/// A listener of the admin server.
pub enum AdminListener {
    /// `unix:/path`.
    Unix(UnixListener),
    /// `ip:port`.
    Tcp(TcpListener),
}

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until `shutdown` is cancelled.
pub async fn serve<S: AdminState>(
    listener: AdminListener,
    state: Arc<S>,
    shutdown: CancellationToken,
) {
    loop {
        let conn: Box<dyn Conn> = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = accept(&listener) => match accepted {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move { handle(conn, state.as_ref()).await });
    }
}

trait Conn: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Conn for T {}

async fn accept(listener: &AdminListener) -> std::io::Result<Box<dyn Conn>> {
    Ok(match listener {
        AdminListener::Unix(l) => Box::new(l.accept().await?.0),
        AdminListener::Tcp(l) => Box::new(l.accept().await?.0),
    })
}

async fn handle<S: AdminState>(mut conn: Box<dyn Conn>, state: &S) {
    let head = tokio::time::timeout(
        HEAD_TIMEOUT,
        crate::egress::head::read_raw(&mut conn, MAX_HEAD),
    )
    .await;
    let Ok(Ok(head)) = head else { return };
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let verbose = query
        .split('&')
        .any(|q| q == "verbose" || q.starts_with("verbose="));
    let (status, ctype, body) = if method != "GET" {
        (405, "text/plain", "only GET is served\n".to_string())
    } else {
        route(state, path, verbose).await
    };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(body.as_bytes()).await;
    let _ = conn.shutdown().await;
}

async fn route<S: AdminState>(state: &S, path: &str, verbose: bool) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/livez" => (200, TEXT, "ok\n".into()),
        "/readyz" | "/healthz" => {
            let checks = state.readiness();
            let ok = checks.iter().all(|c| c.result.is_ok());
            let mut body = String::new();
            if verbose || !ok {
                for c in &checks {
                    match &c.result {
                        Ok(()) => body.push_str(&format!("[+]{} ok\n", c.name)),
                        Err(why) => body.push_str(&format!("[-]{} failed: {why}\n", c.name)),
                    }
                }
            }
            if ok {
                body.push_str("ok\n");
            } else {
                body.push_str(&format!("{} check failed\n", path.trim_start_matches('/')));
            }
            (if ok { 200 } else { 503 }, TEXT, body)
        }
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics(),
        ),
        "/report" => (200, "application/json", state.report().await),
        _ => (
            404,
            TEXT,
            format!("no such endpoint {path}; try /livez /readyz /healthz /metrics /report\n"),
        ),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    }
}
