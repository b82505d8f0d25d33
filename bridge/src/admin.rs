//! The admin HTTP server: `/livez`, `/readyz`, `/healthz`, `/metrics`,
//! `/report`, `/migration`, on a unix socket (mode 0600) or a TCP address.
//!
//! An `axum` [`Router`](axum::Router) served by hyper's HTTP/1.1 connection
//! builder, one request per connection, over the unix socket, plain TCP or
//! TLS. The server knows nothing of tunnels: it asks an [`AdminState`] for
//! each answer.
//!
//! Who may call: on the unix socket, whoever may open it. On TCP, every
//! endpoint but `/livez` and `/readyz` answers 401 unless the caller
//! presented a client certificate from `[admin] client_ca` or the bearer
//! token of `[admin] token_file` (see [`auth`] and [`guard`]). Any request
//! with an `Origin` header is refused with 403 on both: browsers send one,
//! and no web page has business with this API.

pub mod auth;
pub mod guard;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, info};

use crate::tasks::Tasks;

pub use auth::TcpAuth;
pub use guard::Caller;

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
    /// The routes of the migration API (`/migration`, `/migration/ACTION`),
    /// merged into the admin router.
    fn migration_routes(self: &Arc<Self>) -> axum::Router;
}

/// A listener of the admin server.
pub enum AdminListener {
    /// `unix:/path`.
    Unix(UnixListener),
    /// `ip:port`, with how callers authenticate.
    Tcp(TcpListener, TcpAuth),
}

/// Largest request body (migration commands are small JSON documents).
pub const MAX_BODY: usize = 64 * 1024;
/// Largest request head hyper buffers.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head (and the TLS handshake,
/// when no handshake limit is given).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time one request may take, body and answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves until `shutdown` is cancelled. Each connection runs as a task in
/// `tasks` and is cut when `shutdown` is cancelled; the caller waits for
/// `tasks`.
pub async fn serve<S: AdminState>(
    listener: AdminListener,
    state: Arc<S>,
    shutdown: CancellationToken,
    tasks: Tasks,
) {
    let router = routes::router(state);
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
        let router = router.clone();
        let stop = shutdown.clone();
        tasks.spawn("admin connection", async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = async {
                    let Some((conn, caller)) = establish(accepted).await else {
                        return;
                    };
                    serve_connection(conn, caller, router).await
                } => {}
            }
        });
    }
}

trait Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn for T {}

/// One HTTP/1.1 exchange on `conn`; the [`Caller`] rides in the request's
/// extensions for the [`guard`].
async fn serve_connection(conn: Box<dyn Conn>, caller: Caller, router: axum::Router) {
    let peer = caller.peer.clone();
    let service = router.map_request(move |mut req: axum::extract::Request<_>| {
        req.extensions_mut().insert(caller.clone());
        req
    });
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD.max(8192))
        .serve_connection(TokioIo::new(conn), TowerToHyperService::new(service))
        .await;
    if let Err(e) = served {
        debug!(%peer, error = %e, "admin connection ended with an error");
    }
}

/// A connection as accepted, before any TLS handshake.
enum Accepted {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream, SocketAddr, TcpAuth),
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
