//! `[konnectivity] agent_auth = "tokenreview"`: the agent server's token
//! check ([`konnectivity::identity::token`]) asking the apiserver of
//! `[kubernetes]` through `sshbridge-kubeapi`.
//!
//! The API client is built on first use (and warmed up at start, so a bad
//! kubeconfig is logged at once); until it can be built, every token is
//! refused as unavailable, never accepted.

use std::sync::Arc;

use futures::future::BoxFuture;
use sshbridge_config::{AgentAuth, Konnectivity, Kubernetes};
use sshbridge_core::metrics::Registry;
use sshbridge_kubeapi::tokenreview::{ReviewFailure, TokenReviewer};
use tokio::sync::OnceCell;
use tracing::warn;

use crate::konnectivity::identity::token::{BoundPod, Review, ReviewError, Reviewer, TokenAuth};
use crate::konnectivity::identity::Guard;

/// The identity guard of `[konnectivity]` `k`: by certificate, or by token
/// reviewed by the apiserver of `kubernetes` (validation requires the
/// section with tokenreview; without it, the in-cluster service account).
pub(super) fn guard(
    k: &Konnectivity,
    kubernetes: Option<&Kubernetes>,
    registry: &Registry,
) -> Guard {
    let guard = Guard::new(k.identity, registry);
    let AgentAuth::TokenReview(settings) = &k.agent_auth else {
        return guard;
    };
    let reviewer = Arc::new(KubeReviewer {
        settings: kubernetes.cloned().unwrap_or_default(),
        audiences: settings.audiences.clone(),
        client: OnceCell::new(),
    });
    let warm = reviewer.clone();
    tokio::spawn(async move {
        if let Err(e) = warm.reviewer().await {
            warn!("agent token reviews cannot reach the Kubernetes API yet; agents are refused until they can: {e}");
        }
    });
    guard.with_tokens(TokenAuth::new(reviewer, settings))
}

/// [`TokenReviewer`] behind the agent server's [`Reviewer`].
struct KubeReviewer {
    settings: Kubernetes,
    audiences: Vec<String>,
    client: OnceCell<TokenReviewer>,
}

impl KubeReviewer {
    async fn reviewer(&self) -> Result<&TokenReviewer, ReviewError> {
        self.client
            .get_or_try_init(|| async {
                let client = sshbridge_kubeapi::client(&self.settings)
                    .await
                    .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
                Ok(TokenReviewer::new(client, self.audiences.clone()))
            })
            .await
    }
}

fn converted(e: ReviewFailure) -> ReviewError {
    match e {
        ReviewFailure::Rejected(why) => ReviewError::Rejected(why),
        ReviewFailure::NoBinding(why) => ReviewError::NoBinding(why),
        ReviewFailure::Unavailable(why) => ReviewError::Unavailable(why),
    }
}

impl Reviewer for KubeReviewer {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Review, ReviewError>> {
        Box::pin(async move {
            let reviewed = self
                .reviewer()
                .await?
                .review(token)
                .await
                .map_err(converted)?;
            Ok(Review {
                username: reviewed.username,
                node: reviewed.node,
                pod: reviewed.pod,
            })
        })
    }

    fn pod_node<'a>(&'a self, pod: &'a BoundPod) -> BoxFuture<'a, Result<String, ReviewError>> {
        Box::pin(async move {
            self.reviewer()
                .await?
                .pod_node(&pod.namespace, &pod.name, &pod.uid)
                .await
                .map_err(converted)
        })
    }
}
