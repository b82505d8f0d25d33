//! The admin API's routes: the probes, `/metrics`, `/report`, and the
//! migration API the [`AdminState`] mounts.

use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{BoxError, Router};
use tower::ServiceBuilder;

use super::{guard, AdminState, MAX_BODY, REQUEST_TIMEOUT};

const TEXT: &str = "text/plain; charset=utf-8";
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The whole admin API behind the [`guard`], with a body limit and a
/// time limit per request.
pub(super) fn router<S: AdminState>(state: Arc<S>) -> Router {
    let open = Router::new()
        .route("/livez", get(livez).fallback(only_get))
        .route("/readyz", get(readyz::<S>).fallback(only_get))
        .route("/healthz", get(healthz::<S>).fallback(only_get))
        .route("/metrics", get(metrics::<S>).fallback(only_get))
        .route("/report", get(report::<S>).fallback(only_get))
        .fallback(no_such_endpoint)
        .with_state(state.clone());
    open.merge(state.migration_routes())
        .layer(axum::middleware::from_fn(guard::check))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(timed_out))
                .timeout(REQUEST_TIMEOUT),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

async fn timed_out(e: BoxError) -> axum::response::Response {
    if e.is::<tower::timeout::error::Elapsed>() {
        let message = format!(
            "the request took longer than {}s",
            REQUEST_TIMEOUT.as_secs()
        );
        return guard::error(StatusCode::REQUEST_TIMEOUT, &message);
    }
    guard::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
}

async fn livez() -> impl IntoResponse {
    ([(CONTENT_TYPE, TEXT)], "ok\n")
}

async fn readyz<S: AdminState>(
    State(state): State<Arc<S>>,
    RawQuery(query): RawQuery,
) -> impl IntoResponse {
    checks(state.as_ref(), "readyz", verbose(query.as_deref()))
}

async fn healthz<S: AdminState>(
    State(state): State<Arc<S>>,
    RawQuery(query): RawQuery,
) -> impl IntoResponse {
    checks(state.as_ref(), "healthz", verbose(query.as_deref()))
}

/// `?verbose` or `?verbose=...` lists every check.
fn verbose(query: Option<&str>) -> bool {
    query.is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "verbose"))
}

fn checks<S: AdminState>(state: &S, name: &str, verbose: bool) -> impl IntoResponse {
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
    let status = if ok {
        body.push_str("ok\n");
        StatusCode::OK
    } else {
        body.push_str(&format!("{name} check failed\n"));
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(CONTENT_TYPE, TEXT)], body)
}

async fn metrics<S: AdminState>(State(state): State<Arc<S>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, METRICS)], state.metrics())
}

async fn report<S: AdminState>(State(state): State<Arc<S>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], state.report().await)
}

async fn only_get() -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(CONTENT_TYPE, "text/plain")],
        "only GET is served here\n",
    )
}

async fn no_such_endpoint(method: Method, uri: Uri) -> axum::response::Response {
    if method != Method::GET {
        return only_get().await.into_response();
    }
    (
        StatusCode::NOT_FOUND,
        [(CONTENT_TYPE, TEXT)],
        format!(
            "no such endpoint {}; try /livez /readyz /healthz /metrics /report\n",
            uri.path()
        ),
    )
        .into_response()
}
