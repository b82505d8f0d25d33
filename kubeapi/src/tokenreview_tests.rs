use k8s_openapi::api::authentication::v1::UserInfo;

use super::*;

fn status(authenticated: bool, audiences: &[&str], extra: &[(&str, &[&str])]) -> TokenReviewStatus {
    TokenReviewStatus {
        authenticated: Some(authenticated),
        audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
        error: None,
        user: Some(UserInfo {
            username: Some("system:serviceaccount:kube-system:konnectivity-agent".into()),
            extra: Some(
                extra
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                    .collect(),
            ),
            ..UserInfo::default()
        }),
    }
}

fn aud() -> Vec<String> {
    vec!["sshbridge".to_string()]
}

#[test]
fn a_node_claim_and_a_bound_pod_are_read_from_the_extras() {
    let s = status(
        true,
        &["sshbridge"],
        &[
            (NODE_NAME, &["node-a"]),
            (POD_NAME, &["agent-x"]),
            (POD_UID, &["u1"]),
        ],
    );
    let r = read_status(s, &aud()).unwrap();
    assert_eq!(r.node.as_deref(), Some("node-a"));
    assert_eq!(r.pod, Some(("agent-x".into(), "u1".into())));
    assert_eq!(
        r.username,
        "system:serviceaccount:kube-system:konnectivity-agent"
    );
    // Kubernetes < 1.30: the pod only.
    let s = status(
        true,
        &["sshbridge"],
        &[(POD_NAME, &["agent-x"]), (POD_UID, &["u1"])],
    );
    assert_eq!(read_status(s, &aud()).unwrap().node, None);
    // A secret-based token: neither.
    let r = read_status(status(true, &["sshbridge"], &[]), &aud()).unwrap();
    assert_eq!((r.node, r.pod), (None, None));
    // Several values prove nothing.
    let s = status(true, &["sshbridge"], &[(NODE_NAME, &["node-a", "node-b"])]);
    assert_eq!(read_status(s, &aud()).unwrap().node, None);
}

#[test]
fn unauthenticated_or_audience_blind_answers_are_rejections() {
    let mut s = status(false, &[], &[]);
    s.error = Some("token has expired".into());
    assert_eq!(
        read_status(s, &aud()),
        Err(ReviewFailure::Rejected("token has expired".into()))
    );
    let s = status(true, &[], &[(NODE_NAME, &["node-a"])]);
    assert!(
        matches!(read_status(s, &aud()), Err(ReviewFailure::Rejected(m)) if m.contains("none of"))
    );
    // Without configured audiences the apiserver's own are accepted.
    let s = status(true, &[], &[(NODE_NAME, &["node-a"])]);
    assert!(read_status(s, &[]).is_ok());
}
