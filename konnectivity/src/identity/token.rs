//! Agents proven by a Kubernetes service account token
//! (`[konnectivity] agent_auth = "tokenreview"`).
//!
//! The agent sends `authorization: Bearer TOKEN` on its Connect stream (as
//! upstream's proxy-agent does with `--service-account-token-path`). The
//! bridge asks the apiserver (TokenReview, with the configured audiences)
//! who the token is; only `system:serviceaccount:NS:NAME` users of the
//! allow-list pass. The token then names the agent's node: by its node claim
//! (the TokenReview's extra `authentication.kubernetes.io/node-name`, in
//! tokens of Kubernetes >= 1.30), else through the pod it is bound to (extra
//! `pod-name`/`pod-uid`: the pod is read, its uid must match, and its
//! `spec.nodeName` is the node). That node must then agree with the agent's
//! identifiers exactly as with a certificate.
//!
//! Answers (accepted or refused) are reused for `cache_ttl`, keyed by the
//! SHA-256 of the token; the token itself is neither kept nor logged. An
//! apiserver that cannot be asked refuses the agent with `Unavailable`
//! (fail closed) and is not cached, so the agent's next attempt asks again.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use sshbridge_config::{ServiceAccount, TokenReview};
use tonic::metadata::MetadataMap;

use super::Refusal;

/// The gRPC metadata key of the bearer token (upstream: `Authorization`;
/// gRPC metadata keys are lower case on the wire).
pub const METADATA_KEY: &str = "authorization";
/// Most answers kept at once; past it, expired ones are dropped and, if
/// still full, new answers are not kept.
const MAX_CACHED: usize = 4096;
/// Longest wait for one apiserver call; past it the agent is refused as
/// with an unreachable apiserver.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the apiserver's TokenReview says about an authenticated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// `status.user.username`.
    pub username: String,
    /// The node its node claim names, if it has one.
    pub node: Option<String>,
    /// The pod it is bound to, (name, uid), if it is bound to one.
    pub pod: Option<(String, String)>,
}

/// A pod a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    /// Its namespace (the service account's).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid, as the token names it.
    pub uid: String,
}

/// Why the apiserver gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The token is not authenticated (invalid, expired, wrong audience,
    /// its pod deleted), with the apiserver's reason.
    #[error("{0}")]
    Rejected(String),
    /// The bound pod does not bind the token to a node (gone, another uid,
    /// not scheduled).
    #[error("{0}")]
    NoBinding(String),
    /// The apiserver could not be asked or failed to answer.
    #[error("{0}")]
    Unavailable(String),
}

/// The apiserver calls token mode needs; `sshbridge-kubeapi` implements
/// them against a real apiserver.
pub trait Reviewer: Send + Sync {
    /// A TokenReview of `token` with the configured audiences.
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Review, ReviewError>>;
    /// The `spec.nodeName` of `pod`, whose uid must be `pod.uid`.
    fn pod_node<'a>(&'a self, pod: &'a BoundPod) -> BoxFuture<'a, Result<String, ReviewError>>;
}

/// What a token proves: whose it is and which node it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenProof {
    /// Its service account.
    pub account: ServiceAccount,
    /// The node it is bound to.
    pub node: String,
    /// How: "its node claim" or "pod NS/NAME".
    pub via: String,
}

impl fmt::Display for TokenProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service account {} token, node {} by {}",
            self.account, self.node, self.via
        )
    }
}

/// An answer and when it was given, by the SHA-256 of its token.
type Cached = (Instant, Result<TokenProof, Refusal>);

/// Token mode: the reviewer, the allow-list and the answer cache.
pub struct TokenAuth {
    reviewer: Arc<dyn Reviewer>,
    allowed: Vec<ServiceAccount>,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

impl fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAuth")
            .field("allowed", &self.allowed)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenAuth {
    /// Token mode with `settings`, asking `reviewer`.
    pub fn new(reviewer: Arc<dyn Reviewer>, settings: &TokenReview) -> TokenAuth {
        TokenAuth {
            reviewer,
            allowed: settings.service_accounts.clone(),
            ttl: settings.cache_ttl,
            cache: Mutex::default(),
        }
    }

    /// What the bearer token in `md` proves, or why the agent is refused.
    pub async fn prove(&self, md: &MetadataMap) -> Result<TokenProof, Refusal> {
        let token = bearer(md)?;
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Some((at, answer)) = sshbridge_core::lock(&self.cache).get(&key) {
            if now.duration_since(*at) < self.ttl {
                return answer.clone();
            }
        }
        let answer = self.check(token).await;
        if !self.ttl.is_zero() && !matches!(answer, Err(Refusal::ReviewUnavailable(_))) {
            let mut cache = sshbridge_core::lock(&self.cache);
            if cache.len() >= MAX_CACHED {
                let ttl = self.ttl;
                cache.retain(|_, (at, _)| now.duration_since(*at) < ttl);
            }
            if cache.len() < MAX_CACHED {
                cache.insert(key, (now, answer.clone()));
            }
        }
        answer
    }

    async fn check(&self, token: &str) -> Result<TokenProof, Refusal> {
        let review = bounded(self.reviewer.review(token))
            .await
            .map_err(|e| match e {
                ReviewError::Unavailable(why) => Refusal::ReviewUnavailable(why),
                ReviewError::Rejected(why) | ReviewError::NoBinding(why) => {
                    Refusal::TokenRejected(why)
                }
            })?;
        let account = ServiceAccount::from_username(&review.username)
            .filter(|a| self.allowed.contains(a))
            .ok_or_else(|| Refusal::ServiceAccount {
                user: review.username.clone(),
                allowed: self.allowed.iter().map(ToString::to_string).collect(),
            })?;
        if let Some(node) = review.node.filter(|n| !n.is_empty()) {
            return Ok(TokenProof {
                account,
                node,
                via: "its node claim".into(),
            });
        }
        let no_binding = |why: String| Refusal::NoNodeBinding {
            account: account.to_string(),
            why,
        };
        let Some((name, uid)) = review.pod else {
            return Err(no_binding(
                "the token carries neither a node claim nor a bound pod".into(),
            ));
        };
        let pod = BoundPod {
            namespace: account.namespace.clone(),
            name,
            uid,
        };
        let via = format!("pod {}/{}", pod.namespace, pod.name);
        match bounded(self.reviewer.pod_node(&pod)).await {
            Ok(node) if !node.is_empty() => Ok(TokenProof { account, node, via }),
            Ok(_) => Err(no_binding(format!("{via} is not scheduled to a node"))),
            Err(ReviewError::Unavailable(why)) => Err(Refusal::ReviewUnavailable(why)),
            Err(ReviewError::Rejected(why) | ReviewError::NoBinding(why)) => Err(no_binding(why)),
        }
    }
}

/// `call`, or `Unavailable` after [`CALL_TIMEOUT`].
async fn bounded<T>(call: BoxFuture<'_, Result<T, ReviewError>>) -> Result<T, ReviewError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(ReviewError::Unavailable(format!(
                "the apiserver did not answer within {CALL_TIMEOUT:?}"
            )))
        })
}

/// The token of the one `authorization: Bearer TOKEN` value in `md`.
fn bearer(md: &MetadataMap) -> Result<&str, Refusal> {
    let values: Vec<_> = md.get_all(METADATA_KEY).iter().collect();
    let value = match values.as_slice() {
        [] => return Err(Refusal::NoToken),
        [one] => one,
        several => {
            return Err(Refusal::TokenRejected(format!(
                "{} authorization values were sent; send exactly one",
                several.len()
            )))
        }
    };
    let text = value.to_str().map_err(|_| {
        Refusal::TokenRejected("the authorization value is not printable text".into())
    })?;
    let token = text
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
        .map(|_| text[7..].trim())
        .ok_or_else(|| {
            Refusal::TokenRejected("the authorization value is not `Bearer TOKEN`".into())
        })?;
    if token.is_empty() {
        return Err(Refusal::TokenRejected(
            "the bearer token is empty; check the agent's token file".into(),
        ));
    }
    Ok(token)
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
