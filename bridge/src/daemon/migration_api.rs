//! The `/migration` admin API as `axum` routes: `GET /migration` (status)
//! and `POST /migration/{plan,apply,pause,resume,rollback,finalize}`.
//! Errors answer `{"error": "..."}` with a status per [`ApiError`] variant.

use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, MethodRouter};
use axum::{Json, Router};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sshbridge_migrate::{ApplyOptions, Controller, ControllerError, RollbackTarget};
use tracing::error;

use super::Shared;

/// Why a migration API call failed; each variant has its status.
#[derive(Debug, thiserror::Error)]
pub(super) enum ApiError {
    /// No controller: its store is unusable, or it is starting. 503.
    #[error("{0}")]
    Unavailable(String),
    /// The controller refused or failed: 409, 500 (store) or 503 (stopped).
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// The body is not the expected JSON document. 400.
    #[error("bad {what}: {error}")]
    BadBody {
        /// What the body is, e.g. `migration options`.
        what: &'static str,
        /// Why it was refused.
        error: serde_json::Error,
    },
    /// A rollback naming nothing. 400.
    #[error("name the nodes to roll back, or send {{\"all\": true}}")]
    NoRollbackTarget,
    /// A known endpoint, another method. 405.
    #[error("{method} is not allowed on {path}")]
    NotAllowed {
        /// The request's method.
        method: Method,
        /// The request's path.
        path: String,
    },
    /// Under `/migration/`, but no endpoint. 404.
    #[error("no such migration endpoint {0}")]
    NoEndpoint(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unavailable(_) | ApiError::Controller(ControllerError::Stopped) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Controller(ControllerError::Store(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Controller(_) => StatusCode::CONFLICT,
            ApiError::BadBody { .. } | ApiError::NoRollbackTarget => StatusCode::BAD_REQUEST,
            ApiError::NotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NoEndpoint(_) => StatusCode::NOT_FOUND,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            error!(error = %self, "migration store failed");
        }
        crate::admin::guard::error(status, &self.to_string())
    }
}

/// The routes, on the daemon's shared state.
pub(super) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/migration", refuse_others(get(status)))
        .route("/migration/plan", refuse_others(post(plan)))
        .route("/migration/apply", refuse_others(post(apply)))
        .route("/migration/pause", refuse_others(post(pause)))
        .route("/migration/resume", refuse_others(post(resume)))
        .route("/migration/rollback", refuse_others(post(rollback)))
        .route("/migration/finalize", refuse_others(post(finalize)))
        .route("/migration/{*rest}", any(no_endpoint))
        .with_state(shared)
}

fn refuse_others(route: MethodRouter<Arc<Shared>>) -> MethodRouter<Arc<Shared>> {
    route.fallback(|method: Method, uri: Uri| async move {
        ApiError::NotAllowed {
            method,
            path: uri.path().to_string(),
        }
    })
}

async fn no_endpoint(uri: Uri) -> ApiError {
    ApiError::NoEndpoint(uri.path().to_string())
}

fn controller(shared: &Shared) -> Result<&Controller, ApiError> {
    match shared.migration.get() {
        Some(Ok(c)) => Ok(c),
        Some(Err(why)) => Err(ApiError::Unavailable(why.to_string())),
        None => Err(ApiError::Unavailable(
            "the migration controller is starting".into(),
        )),
    }
}

type Answer<T> = Result<Pretty<T>, ApiError>;

async fn status(State(shared): State<Arc<Shared>>) -> Answer<impl Serialize> {
    Ok(Pretty(controller(&shared)?.status().await?))
}

async fn plan(
    State(shared): State<Arc<Shared>>,
    Body(options): Body<ApplyOptions>,
) -> Answer<impl Serialize> {
    Ok(Pretty(controller(&shared)?.plan(options).await?))
}

async fn apply(
    State(shared): State<Arc<Shared>>,
    Body(options): Body<ApplyOptions>,
) -> Answer<impl Serialize> {
    Ok(Pretty(controller(&shared)?.apply(options).await?))
}

async fn pause(State(shared): State<Arc<Shared>>) -> Answer<impl Serialize> {
    let controller = controller(&shared)?;
    controller.pause().await?;
    Ok(Pretty(controller.status().await?))
}

async fn resume(State(shared): State<Arc<Shared>>) -> Answer<impl Serialize> {
    let controller = controller(&shared)?;
    controller.resume().await?;
    Ok(Pretty(controller.status().await?))
}

/// Body of `POST /migration/rollback`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    all: bool,
}

/// Answer of `POST /migration/rollback`.
#[derive(Serialize)]
struct RolledBack {
    rolled_back: Vec<String>,
}

async fn rollback(
    State(shared): State<Arc<Shared>>,
    Body(body): Body<RollbackBody>,
) -> Result<Json<RolledBack>, ApiError> {
    let target = match body {
        b if b.all => RollbackTarget::All,
        b if !b.nodes.is_empty() => RollbackTarget::Nodes(b.nodes),
        _ => return Err(ApiError::NoRollbackTarget),
    };
    let rolled_back = controller(&shared)?.rollback(target).await?;
    Ok(Json(RolledBack { rolled_back }))
}

async fn finalize(State(shared): State<Arc<Shared>>) -> Answer<impl Serialize> {
    let finalized = controller(&shared)?.finalize().await?;
    shared.park_ssh(&finalized.nodes);
    Ok(Pretty(finalized))
}

/// A JSON answer, pretty-printed (what `curl` users read).
struct Pretty<T>(T);

impl<T: Serialize> IntoResponse for Pretty<T> {
    fn into_response(self) -> Response {
        let body = serde_json::to_string_pretty(&self.0)
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot encode: {e}\"}}"));
        ([(CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// A JSON request body document: what it is called in errors, and what an
/// empty body means.
trait Document: DeserializeOwned {
    const WHAT: &'static str;
    /// The document an empty body stands for, if any.
    fn empty() -> Option<Self>;
}

impl Document for ApplyOptions {
    const WHAT: &'static str = "migration options";
    fn empty() -> Option<Self> {
        Some(ApplyOptions::default())
    }
}

impl Document for RollbackBody {
    const WHAT: &'static str = "rollback body";
    fn empty() -> Option<Self> {
        None
    }
}

/// A JSON body, whatever its `Content-Type` (the CLI and curl users send
/// none or `application/json`); refused with [`ApiError::BadBody`].
struct Body<T>(T);

impl<T: Document, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            if let Some(empty) = T::empty() {
                return Ok(Body(empty));
            }
        }
        serde_json::from_slice(&bytes).map(Body).map_err(|error| {
            ApiError::BadBody {
                what: T::WHAT,
                error,
            }
            .into_response()
        })
    }
}
