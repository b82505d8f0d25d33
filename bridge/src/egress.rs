//! Egress frontends: where kube-apiserver hands the bridge its `cluster`
//! egress: HTTP CONNECT over a unix socket or mutual-TLS TCP ([`http_connect`])
//! and Konnectivity's gRPC `ProxyService` over a unix socket ([`grpc`]).
//!
//! A frontend knows nothing of nodes or paths: it parses the request, asks a
//! [`Dial`] for a stream, answers with a status and then copies bytes both
//! ways until both sides have closed.

pub mod grpc;
pub mod head;
pub mod http_connect;
pub mod idle;

use std::future::Future;

use crate::path::{BoxStream, DialError};
use crate::router::RouteError;

/// A dial request failed before any byte reached the target.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The router refused the destination (403) or found no healthy node (503).
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The node's path failed the dial (502, 503, 504).
    #[error(transparent)]
    Dial(#[from] DialError),
}

impl EgressError {
    /// The HTTP status an egress frontend answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            EgressError::Route(e) => e.http_status(),
            EgressError::Dial(e) => e.http_status(),
        }
    }
}

/// A dialed stream and the node that carries it.
pub struct Dialed {
    /// The byte stream to the target.
    pub stream: BoxStream,
    /// The node whose path carries it (for logs).
    pub node: String,
}

/// Routes a target and dials it through the right node's path, within the
/// configured dial timeout. A frontend routes a request once and dials
/// that route, so a decision that takes a turn (a service's next node)
/// is taken once per request.
pub trait Dial: Send + Sync + 'static {
    /// Where a target goes, as decided by [`Dial::route`].
    type Route: Send + 'static;

    /// Decides where `host:port` (host without brackets) goes, or why it
    /// may not.
    fn route(&self, host: &str, port: u16) -> Result<Self::Route, EgressError>;

    /// Dials a routed target.
    fn dial(&self, route: Self::Route) -> impl Future<Output = Result<Dialed, EgressError>> + Send;

    /// The runtime a stream on `route` runs on, when its path has one of
    /// its own (the SSH session's thread): a frontend that can move its
    /// client there dials from it, so the stream's copy and the session
    /// share a thread. `None` (the default): dial where the client is.
    fn home(&self, _route: &Self::Route) -> Option<tokio::runtime::Handle> {
        None
    }
}

/// A route that is only the target, for a [`Dial`] that decides nothing
/// before it dials (tests, single-node frontends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host, without brackets.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Target {
    /// `host:port` as a route.
    pub fn route(host: &str, port: u16) -> Result<Target, EgressError> {
        Ok(Target {
            host: host.to_owned(),
            port,
        })
    }
}
