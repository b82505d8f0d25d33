//! The admin HTTP server: `/livez`, `/readyz`, `/healthz`, `/metrics`,
//! `/report`, on a unix socket (mode 0600) or a TCP address.
//!
//! Plain HTTP/1.1, GET only, one request per connection. The server knows
//! nothing of tunnels: it asks an [`AdminState`] for each answer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
    /// The migration API (`/migration`, `/migration/ACTION`): status and
    /// JSON body of the answer.
    fn migration(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> impl Future<Output = (u16, String)> + Send;
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
/// Largest request body (migration commands are small JSON documents).
const MAX_BODY: usize = 64 * 1024;
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
    let request = tokio::time::timeout(HEAD_TIMEOUT, read_request(&mut conn)).await;
    let Ok(Some((method, target, body))) = request else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let verbose = query
        .split('&')
        .any(|q| q == "verbose" || q.starts_with("verbose="));
    let (status, ctype, body) = match (method.as_str(), path) {
        (_, p) if p == "/migration" || p.starts_with("/migration/") => {
            let (status, json) = state.migration(&method, p, &body).await;
            (status, "application/json", json)
        }
        ("GET", _) => route(state, path, verbose).await,
        _ => (405, "text/plain", "only GET is served here\n".to_string()),
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

/// Method, target and body (up to [`MAX_BODY`], by Content-Length).
async fn read_request(conn: &mut Box<dyn Conn>) -> Option<(String, String, Vec<u8>)> {
    let (head, mut body) = crate::egress::head::read_raw(conn, MAX_HEAD).await.ok()?;
    let mut lines = head.lines();
    let mut parts = lines.next()?.split(' ');
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if length > MAX_BODY {
        return None;
    }
    if body.len() < length {
        let mut more = vec![0u8; length - body.len()];
        conn.read_exact(&mut more).await.ok()?;
        body.extend_from_slice(&more);
    }
    body.truncate(length);
    Some((method, target, body))
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
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    }
}
