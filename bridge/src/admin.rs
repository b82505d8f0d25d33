//! The admin HTTP server: `/livez`, `/readyz`, `/healthz`, `/metrics`,
//! `/report`, `/migration`, on a unix socket (mode 0600) or a TCP address.
//!
//! HTTP/1.1, one request per connection. The server knows nothing of
//! tunnels: it asks an [`AdminState`] for each answer.
//!
//! Who may call: on the unix socket, whoever may open it. On TCP, every
//! endpoint but `/livez` and `/readyz` answers 401 unless the caller
//! presented a client certificate from `[admin] client_ca` or the bearer
//! token of `[admin] token_file` (see [`auth`]). Any request with an
//! `Origin` header is refused with 403 on both: browsers send one, and no
//! web page has business with this API.

pub mod auth;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

pub use auth::TcpAuth;

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
    /// `ip:port`, with how callers authenticate.
    Tcp(TcpListener, TcpAuth),
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
        let accepted = tokio::select! {
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
        tokio::spawn(async move {
            let Some((conn, caller)) = establish(accepted).await else {
                return;
            };
            handle(conn, caller, state.as_ref()).await
        });
    }
}

trait Conn: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Conn for T {}

/// A connection as accepted, before any TLS handshake.
enum Accepted {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream, SocketAddr, TcpAuth),
}

/// What the server knows of a caller before reading its request.
struct Caller {
    /// Where it came from, for logs.
    peer: String,
    /// Credentials are needed (TCP), and how they may be given.
    auth: Option<TcpAuth>,
    /// It presented a client certificate that `client_ca` verified.
    certified: bool,
}

async fn accept(listener: &AdminListener) -> std::io::Result<Accepted> {
    Ok(match listener {
        AdminListener::Unix(l) => Accepted::Unix(l.accept().await?.0),
        AdminListener::Tcp(l, auth) => {
            let (tcp, peer) = l.accept().await?;
            Accepted::Tcp(tcp, peer, auth.clone())
        }
    })
}

/// The TLS handshake of a TCP connection (bounded by [`HEAD_TIMEOUT`]).
async fn establish(accepted: Accepted) -> Option<(Box<dyn Conn>, Caller)> {
    match accepted {
        Accepted::Unix(s) => {
            let caller = Caller {
                peer: "unix socket".into(),
                auth: None,
                certified: false,
            };
            Some((Box::new(s), caller))
        }
        Accepted::Tcp(tcp, peer, auth) => {
            let Some((acceptor, client_ca)) = auth.tls.clone() else {
                let caller = Caller {
                    peer: peer.to_string(),
                    auth: Some(auth),
                    certified: false,
                };
                return Some((Box::new(tcp), caller));
            };
            let tls = match &auth.handshakes {
                Some(limit) => limit.accept(&acceptor, tcp, peer).await?,
                None => match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        info!(%peer, error = %e, "admin TLS handshake failed");
                        return None;
                    }
                    Err(_) => {
                        info!(%peer, "admin TLS handshake timed out");
                        return None;
                    }
                },
            };
            let certified = client_ca && tls.get_ref().1.peer_certificates().is_some();
            let caller = Caller {
                peer: peer.to_string(),
                auth: Some(auth),
                certified,
            };
            Some((Box::new(tls), caller))
        }
    }
}

async fn handle<S: AdminState>(mut conn: Box<dyn Conn>, caller: Caller, state: &S) {
    let request = tokio::time::timeout(HEAD_TIMEOUT, read_request(&mut conn)).await;
    let Ok(Some(req)) = request else {
        return;
    };
    let Request {
        method,
        target,
        body,
        authorization,
        origin,
    } = req;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let verbose = query
        .split('&')
        .any(|q| q == "verbose" || q.starts_with("verbose="));
    let (status, ctype, body) = if origin {
        info!(peer = %caller.peer, %method, path, "admin request with an Origin header refused");
        (
            403,
            "application/json",
            error_json("requests with an Origin header (from a web browser) are refused; use the sshbridge CLI or curl"),
        )
    } else if !authorized(&caller, path, authorization.as_deref()) {
        info!(peer = %caller.peer, %method, path, "admin request without valid credentials refused");
        (
            401,
            "application/json",
            error_json("authentication required: present a client certificate from [admin] client_ca (--admin-cert/--admin-key) or the bearer token of [admin] token_file (--token-file)"),
        )
    } else {
        match (method.as_str(), path) {
            (_, p) if p == "/migration" || p.starts_with("/migration/") => {
                let (status, json) = state.migration(&method, p, &body).await;
                (status, "application/json", json)
            }
            ("GET", _) => route(state, path, verbose).await,
            _ => (405, "text/plain", "only GET is served here\n".to_string()),
        }
    };
    let challenge = if status == 401 {
        "WWW-Authenticate: Bearer realm=\"sshbridge\"\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{challenge}Connection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(body.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Whether `caller` may have `path`: always on the unix socket, for the
/// open probes, and on TCP with a verified certificate or the token.
fn authorized(caller: &Caller, path: &str, authorization: Option<&str>) -> bool {
    let Some(auth) = &caller.auth else {
        return true;
    };
    if auth::OPEN_PATHS.contains(&path) || caller.certified {
        return true;
    }
    match (&auth.token, authorization.and_then(auth::bearer)) {
        (Some(token), Some(presented)) => token.matches(presented.as_bytes()),
        _ => false,
    }
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// A request as read.
struct Request {
    method: String,
    target: String,
    body: Vec<u8>,
    /// The `Authorization` header's value.
    authorization: Option<String>,
    /// An `Origin` header was present.
    origin: bool,
}

/// Method, target, body (up to [`MAX_BODY`], by Content-Length) and the
/// headers that decide who is calling.
async fn read_request(conn: &mut Box<dyn Conn>) -> Option<Request> {
    let (head, mut body) = crate::egress::head::read_raw(conn, MAX_HEAD).await.ok()?;
    let mut lines = head.lines();
    let mut parts = lines.next()?.split(' ');
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let length = header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let authorization = header("authorization").map(str::to_string);
    let origin = header("origin").is_some();
    if length > MAX_BODY {
        return None;
    }
    if body.len() < length {
        let mut more = vec![0u8; length - body.len()];
        conn.read_exact(&mut more).await.ok()?;
        body.extend_from_slice(&more);
    }
    body.truncate(length);
    Some(Request {
        method,
        target,
        body,
        authorization,
        origin,
    })
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
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    }
}
