//! TokenReview of Konnectivity agents' service account tokens
//! (`[konnectivity] agent_auth = "tokenreview"`): who a token is, which
//! node or pod it is bound to, and the node of that pod. The policy (the
//! allow-list, the cache, what a refusal says) is the agent server's
//! (`sshbridge_konnectivity::identity::token`); this is the apiserver side.
//!
//! The bridge's own credentials need `create` on
//! `tokenreviews.authentication.k8s.io` and `get` on `pods`.

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

/// Extra of a TokenReview naming the node a token is bound to (tokens of
/// Kubernetes >= 1.30: node-bound tokens, and pod-bound tokens with the
/// pod's node).
pub const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// Extra naming the pod a token is bound to.
pub const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// Extra carrying that pod's uid.
pub const POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// What a TokenReview established about an authenticated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    /// `status.user.username`.
    pub username: String,
    /// The node of its node claim, if any.
    pub node: Option<String>,
    /// The pod it is bound to, (name, uid), if any.
    pub pod: Option<(String, String)>,
}

/// Why a review or pod lookup gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewFailure {
    /// The token is not authenticated, with the apiserver's reason.
    #[error("{0}")]
    Rejected(String),
    /// The bound pod names no node (gone, another uid, not scheduled).
    #[error("{0}")]
    NoBinding(String),
    /// The apiserver could not be asked, or refused the bridge itself.
    #[error("{0}")]
    Unavailable(String),
}

/// Reviews tokens against one apiserver for fixed audiences.
#[derive(Clone)]
pub struct TokenReviewer {
    client: kube::Client,
    audiences: Vec<String>,
}

impl TokenReviewer {
    /// Reviews with `client`, asking for `audiences` (empty: the
    /// apiserver's own).
    pub fn new(client: kube::Client, audiences: Vec<String>) -> TokenReviewer {
        TokenReviewer { client, audiences }
    }

    /// A TokenReview of `token`.
    pub async fn review(&self, token: &str) -> Result<Reviewed, ReviewFailure> {
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &request)
            .await
            .map_err(|e| unavailable("TokenReview", "create", "tokenreviews", &e))?;
        read_status(answer.status.unwrap_or_default(), &self.audiences)
    }

    /// The `spec.nodeName` of pod `namespace/name`, which must have uid
    /// `uid` (a pod re-created under the same name is another pod).
    pub async fn pod_node(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<String, ReviewFailure> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = api
            .get_opt(name)
            .await
            .map_err(|e| unavailable("reading the agent's pod", "get", "pods", &e))?
            .ok_or_else(|| {
                ReviewFailure::NoBinding(format!("its pod {namespace}/{name} does not exist"))
            })?;
        let found = pod.metadata.uid.unwrap_or_default();
        if found != uid {
            return Err(ReviewFailure::NoBinding(format!(
                "its pod {namespace}/{name} has uid {found}, not the token's {uid}"
            )));
        }
        pod.spec
            .and_then(|s| s.node_name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ReviewFailure::NoBinding(format!(
                    "its pod {namespace}/{name} is not scheduled to a node"
                ))
            })
    }
}

/// What a TokenReview's `status` says, for a review that asked for
/// `audiences`.
pub fn read_status(
    status: TokenReviewStatus,
    audiences: &[String],
) -> Result<Reviewed, ReviewFailure> {
    if status.authenticated != Some(true) {
        let why = status
            .error
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "not authenticated".to_string());
        return Err(ReviewFailure::Rejected(why));
    }
    if !audiences.is_empty() {
        // An audience-aware apiserver echoes the audiences the token is
        // valid for; one that ignored the request's would echo none.
        let granted = status.audiences.unwrap_or_default();
        if !granted.iter().any(|a| audiences.contains(a)) {
            return Err(ReviewFailure::Rejected(format!(
                "the token is valid for {granted:?}, none of {audiences:?}"
            )));
        }
    }
    let user = status.user.unwrap_or_default();
    let extra = user.extra.unwrap_or_default();
    let one = |key: &str| single(&extra, key);
    let pod = match (one(POD_NAME), one(POD_UID)) {
        (Some(name), Some(uid)) => Some((name, uid)),
        _ => None,
    };
    Ok(Reviewed {
        username: user.username.unwrap_or_default(),
        node: one(NODE_NAME),
        pod,
    })
}

/// The one non-empty value of `key` in `extra`; none when it is absent or
/// has several values.
fn single(extra: &BTreeMap<String, Vec<String>>, key: &str) -> Option<String> {
    match extra.get(key).map(Vec::as_slice) {
        Some([one]) if !one.is_empty() => Some(one.clone()),
        _ => None,
    }
}

/// A failed call: the bridge's own credentials refused (say which
/// permission it needs), or the apiserver not reachable.
fn unavailable(what: &str, verb: &str, resource: &str, e: &kube::Error) -> ReviewFailure {
    match e {
        kube::Error::Api(r) if r.code == 401 || r.code == 403 => ReviewFailure::Unavailable(format!(
            "the apiserver refused the bridge's {what} ({} {}); grant the bridge's credentials `{verb}` on {resource}",
            r.code, r.message
        )),
        kube::Error::Api(r) => ReviewFailure::Unavailable(format!(
            "{what} failed: {} {} {}",
            r.code, r.reason, r.message
        )),
        other => ReviewFailure::Unavailable(format!("the apiserver is unreachable ({what}: {other})")),
    }
}

#[cfg(test)]
#[path = "tokenreview_tests.rs"]
mod tests;
