use std::sync::atomic::{AtomicUsize, Ordering};

use sshbridge_config::{AgentIdentity, Node};
use sshbridge_core::metrics::Registry;

use super::*;
use crate::identifiers::Identifiers;
use crate::identity::Guard;

/// A stand-in apiserver: tokens it knows, pods it has, calls it got.
#[derive(Default)]
struct FakeApi {
    reviews: HashMap<String, Result<Review, ReviewError>>,
    pods: HashMap<String, Result<String, ReviewError>>,
    calls: AtomicUsize,
}

impl Reviewer for FakeApi {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Review, ReviewError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self
            .reviews
            .get(token)
            .cloned()
            .unwrap_or_else(|| Err(ReviewError::Rejected("invalid bearer token".into())));
        Box::pin(async move { answer })
    }
    fn pod_node<'a>(&'a self, pod: &'a BoundPod) -> BoxFuture<'a, Result<String, ReviewError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let key = format!("{}/{}/{}", pod.namespace, pod.name, pod.uid);
        let answer = self
            .pods
            .get(&key)
            .cloned()
            .unwrap_or_else(|| Err(ReviewError::NoBinding(format!("pod {key} not found"))));
        Box::pin(async move { answer })
    }
}

const AGENT: &str = "system:serviceaccount:kube-system:konnectivity-agent";

fn review(user: &str, node: Option<&str>, pod: Option<(&str, &str)>) -> Review {
    Review {
        username: user.into(),
        node: node.map(Into::into),
        pod: pod.map(|(n, u)| (n.into(), u.into())),
    }
}

fn api() -> FakeApi {
    let mut api = FakeApi::default();
    let ok = |r| Ok::<_, ReviewError>(r);
    api.reviews
        .insert("claim-a".into(), ok(review(AGENT, Some("node-a"), None)));
    api.reviews.insert(
        "pod-b".into(),
        ok(review(AGENT, None, Some(("agent-x", "uid-1")))),
    );
    api.reviews.insert(
        "pod-gone".into(),
        ok(review(AGENT, None, Some(("agent-y", "uid-2")))),
    );
    api.reviews
        .insert("unbound-tok".into(), ok(review(AGENT, None, None)));
    api.reviews.insert(
        "other-sa".into(),
        ok(review(
            "system:serviceaccount:default:default",
            Some("node-a"),
            None,
        )),
    );
    api.reviews
        .insert("a-user".into(), ok(review("alice", Some("node-a"), None)));
    api.reviews.insert(
        "down".into(),
        Err(ReviewError::Unavailable("connection refused".into())),
    );
    api.pods
        .insert("kube-system/agent-x/uid-1".into(), Ok("node-b".to_string()));
    api
}

fn settings(ttl: Duration) -> TokenReview {
    TokenReview {
        audiences: vec!["sshbridge".into()],
        service_accounts: vec!["kube-system/konnectivity-agent".parse().unwrap()],
        cache_ttl: ttl,
    }
}

fn md(values: &[&str]) -> MetadataMap {
    let mut md = MetadataMap::new();
    for v in values {
        md.append(METADATA_KEY, v.parse().unwrap());
    }
    md
}

fn nodes() -> Vec<Node> {
    let node = |name: &str, addr: &str, pods: &str| {
        Node::new(name, addr.parse().unwrap(), vec![pods.parse().unwrap()])
    };
    vec![
        node("node-a", "10.0.0.5", "10.244.1.0/24"),
        node("node-b", "10.0.0.6", "10.244.2.0/24"),
    ]
}

#[tokio::test]
async fn a_node_claim_or_a_bound_pod_names_the_node() {
    let auth = TokenAuth::new(Arc::new(api()), &settings(Duration::from_secs(10)));
    let a = auth.prove(&md(&["Bearer claim-a"])).await.unwrap();
    assert_eq!(
        (a.node.as_str(), a.via.as_str()),
        ("node-a", "its node claim")
    );
    assert_eq!(a.account.to_string(), "kube-system/konnectivity-agent");
    let b = auth.prove(&md(&["bearer pod-b"])).await.unwrap();
    assert_eq!(
        (b.node.as_str(), b.via.as_str()),
        ("node-b", "pod kube-system/agent-x")
    );
}

#[tokio::test]
async fn every_refusal_names_its_reason_and_never_the_token() {
    let auth = TokenAuth::new(Arc::new(api()), &settings(Duration::from_secs(10)));
    let cases: [(&[&str], &str, tonic::Code); 9] = [
        (&[], "no_token", tonic::Code::Unauthenticated),
        (
            &["Basic abc"],
            "token_rejected",
            tonic::Code::Unauthenticated,
        ),
        (
            &["Bearer  "],
            "token_rejected",
            tonic::Code::Unauthenticated,
        ),
        (
            &["Bearer claim-a", "Bearer pod-b"],
            "token_rejected",
            tonic::Code::Unauthenticated,
        ),
        (
            &["Bearer garbage"],
            "token_rejected",
            tonic::Code::Unauthenticated,
        ),
        (
            &["Bearer other-sa"],
            "service_account",
            tonic::Code::PermissionDenied,
        ),
        (
            &["Bearer a-user"],
            "service_account",
            tonic::Code::PermissionDenied,
        ),
        (
            &["Bearer unbound-tok"],
            "no_node_binding",
            tonic::Code::PermissionDenied,
        ),
        (
            &["Bearer down"],
            "review_unavailable",
            tonic::Code::Unavailable,
        ),
    ];
    for (values, reason, code) in cases {
        let refusal = auth.prove(&md(values)).await.expect_err(reason);
        assert_eq!(refusal.reason(), reason, "{values:?}: {refusal}");
        assert_eq!(refusal.status().code(), code, "{values:?}");
        for v in values {
            let token = v.split_whitespace().nth(1).unwrap_or("");
            if token.len() > 3 {
                assert!(!refusal.to_string().contains(token), "{refusal}");
            }
        }
    }
    let gone = auth.prove(&md(&["Bearer pod-gone"])).await.unwrap_err();
    assert_eq!(gone.reason(), "no_node_binding");
    assert!(gone.to_string().contains("agent-y"), "{gone}");
    let other = auth.prove(&md(&["Bearer other-sa"])).await.unwrap_err();
    assert!(
        other
            .to_string()
            .contains("system:serviceaccount:default:default")
            && other.to_string().contains("kube-system/konnectivity-agent"),
        "{other}"
    );
}

#[tokio::test]
async fn answers_are_cached_by_token_hash_but_outages_are_not() {
    let api = Arc::new(api());
    let auth = TokenAuth::new(api.clone(), &settings(Duration::from_secs(10)));
    let calls = || api.calls.load(Ordering::SeqCst);
    auth.prove(&md(&["Bearer pod-b"])).await.unwrap();
    assert_eq!(calls(), 2, "a review and a pod lookup");
    auth.prove(&md(&["Bearer pod-b"])).await.unwrap();
    auth.prove(&md(&["Bearer garbage"])).await.unwrap_err();
    auth.prove(&md(&["Bearer garbage"])).await.unwrap_err();
    assert_eq!(
        calls(),
        3,
        "the accepted and the rejected answer are reused"
    );
    auth.prove(&md(&["Bearer down"])).await.unwrap_err();
    auth.prove(&md(&["Bearer down"])).await.unwrap_err();
    assert_eq!(calls(), 5, "an unreachable apiserver is asked again");
    let cached = sshbridge_core::lock(&auth.cache).len();
    assert_eq!(
        cached, 2,
        "the accepted and the rejected token; not the outage"
    );

    let uncached = TokenAuth::new(api.clone(), &settings(Duration::ZERO));
    let before = calls();
    uncached.prove(&md(&["Bearer claim-a"])).await.unwrap();
    uncached.prove(&md(&["Bearer claim-a"])).await.unwrap();
    assert_eq!(calls() - before, 2, "cache_ttl = 0s reviews every stream");
}

#[tokio::test]
async fn the_token_node_must_agree_with_the_identifiers_and_exist() {
    let guard = Guard::new(AgentIdentity::Proven, &Registry::new()).with_tokens(TokenAuth::new(
        Arc::new(api()),
        &settings(Duration::from_secs(10)),
    ));
    let proof = guard.prove_token(&md(&["Bearer pod-b"])).await.unwrap();
    let ok = guard.authorize_token(
        &proof,
        &Identifiers::parse("host=node-b&ipv4=10.0.0.6"),
        &nodes(),
    );
    assert_eq!(ok, Ok(Some("node-b".to_string())));
    let mismatch = guard
        .authorize_token(&proof, &Identifiers::parse("host=node-a"), &nodes())
        .unwrap_err();
    assert_eq!(mismatch.reason(), "host");
    assert!(mismatch
        .to_string()
        .contains("agent of node node-b claims host=node-a"));
    let stranger = TokenProof {
        node: "node-z".into(),
        ..proof.clone().unwrap()
    };
    let unknown = guard
        .authorize_token(&Ok(stranger), &Identifiers::default(), &nodes())
        .unwrap_err();
    assert_eq!(unknown.reason(), "unknown_node");
    assert!(unknown.to_string().contains("node-z"), "{unknown}");
    // Token mode never falls back to certificates.
    let no_token = guard
        .authorize(None, &Identifiers::parse("host=node-a"), &nodes())
        .unwrap_err();
    assert_eq!(no_token, Refusal::NoToken);
}

#[tokio::test]
async fn certificate_and_claimed_modes_ask_for_no_token() {
    let api = Arc::new(api());
    for mode in [AgentIdentity::Proven, AgentIdentity::Claimed] {
        let plain = Guard::new(mode, &Registry::new());
        assert!(plain.prove_token(&md(&["Bearer claim-a"])).await.is_none());
    }
    let claimed = Guard::new(AgentIdentity::Claimed, &Registry::new())
        .with_tokens(TokenAuth::new(api.clone(), &settings(Duration::ZERO)));
    assert!(claimed
        .prove_token(&md(&["Bearer claim-a"]))
        .await
        .is_none());
    assert_eq!(api.calls.load(Ordering::SeqCst), 0);
}
