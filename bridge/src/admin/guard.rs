//! The admin API's gate, run before any handler (unknown paths included):
//! refuse requests with an `Origin` header (403), then requests on TCP
//! without a verified client certificate or the bearer token (401), except
//! the open probes of [`auth::OPEN_PATHS`].

use axum::extract::Request;
use axum::http::header::{AUTHORIZATION, ORIGIN, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::info;

use super::auth::{self, TcpAuth};

/// What the server knows of a caller before reading its request; put in
/// each request's extensions by the connection that carried it.
#[derive(Clone)]
pub struct Caller {
    /// Where it came from, for logs.
    pub peer: String,
    /// Credentials are needed (TCP), and how they may be given.
    pub auth: Option<TcpAuth>,
    /// It presented a client certificate that `client_ca` verified.
    pub certified: bool,
}

/// The middleware: refuses or passes `req` on to the routes.
pub async fn check(req: Request, next: Next) -> Response {
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        // Every connection inserts its caller; a request without one did
        // not come through `serve`.
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    if req.headers().contains_key(ORIGIN) {
        info!(peer = %caller.peer, %method, path, "admin request with an Origin header refused");
        return error(
            StatusCode::FORBIDDEN,
            "requests with an Origin header (from a web browser) are refused; use the sshbridge CLI or curl",
        );
    }
    let authorization = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !authorized(&caller, &path, authorization) {
        info!(peer = %caller.peer, %method, path, "admin request without valid credentials refused");
        let mut answer = error(
            StatusCode::UNAUTHORIZED,
            "authentication required: present a client certificate from [admin] client_ca (--admin-cert/--admin-key) or the bearer token of [admin] token_file (--token-file)",
        );
        answer.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sshbridge\""),
        );
        return answer;
    }
    next.run(req).await
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

/// An `{"error": message}` answer with `status`.
pub fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
