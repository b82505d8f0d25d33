use super::*;
use crate::flow::Extensions;
use crate::hub::Hub;
use crate::server::admit::admit;
use sshbridge_sim::pki::Pki;

/// No extension announced: the compatibility mode upstream agents get.
const NONE: (Extensions, Option<usize>) = (Extensions::NONE, None);

fn node(name: &str, addr: &str, pods: &[&str]) -> Node {
    let pods = pods.iter().map(|p| p.parse().unwrap()).collect();
    Node::new(name, addr.parse().unwrap(), pods)
}

fn nodes() -> Vec<Node> {
    vec![
        node("node-a", "10.0.0.5", &["10.244.1.0/24"]),
        node("node-b", "10.0.0.6", &["10.244.2.0/24"]),
    ]
}

fn peer(pem: &str) -> AgentPeer {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    AgentPeer {
        addr: ([127, 0, 0, 1], 1).into(),
        certs: Some(Arc::new(certs)),
    }
}

fn proven() -> Guard {
    Guard::new(AgentIdentity::Proven, &Registry::new())
}

#[test]
fn kubelet_style_common_name_proves_its_node() {
    let pki = Pki::new("ca").unwrap();
    let a = peer(&pki.issue_node_client("node-a").unwrap().cert_pem);
    let ids = Identifiers::parse("host=node-a&ipv4=10.0.0.5&cidr=10.244.1.0/25");
    let got = proven().authorize(Some(&a), &ids, &nodes());
    assert_eq!(got, Ok(Some("node-a".to_string())));
    // No claims at all: the certificate alone says which node.
    let got = proven().authorize(Some(&a), &Identifiers::default(), &nodes());
    assert_eq!(got, Ok(Some("node-a".to_string())));
}

#[test]
fn san_dns_name_proves_its_node() {
    let pki = Pki::new("ca").unwrap();
    let b = peer(&pki.issue_client_dns("agent", &["NODE-B"]).unwrap().cert_pem);
    let got = proven().authorize(Some(&b), &Identifiers::parse("host=node-b"), &nodes());
    assert_eq!(got, Ok(Some("node-b".to_string())));
}

#[test]
fn every_claim_about_another_node_is_refused_and_named() {
    let pki = Pki::new("ca").unwrap();
    let a = peer(&pki.issue_node_client("node-a").unwrap().cert_pem);
    let guard = proven();
    let cases = [
        ("host=node-b", "host", "claims host=node-b"),
        (
            "host=node-a&ipv4=10.0.0.6",
            "address",
            "claims address 10.0.0.6",
        ),
        ("ipv6=::ffff:10.0.0.6", "address", "10.0.0.5"),
        ("cidr=10.244.2.0/24", "cidr", "cidr=10.244.2.0/24"),
        ("cidr=0.0.0.0/0", "cidr", "not inside node-a's pod_cidrs"),
        ("cidr=10.244.0.0/16", "cidr", "cidr=10.244.0.0/16"),
    ];
    for (claims, reason, says) in cases {
        let refusal = guard
            .authorize(Some(&a), &Identifiers::parse(claims), &nodes())
            .expect_err(claims);
        assert_eq!(refusal.reason(), reason, "{claims}");
        let status = refusal.status();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains(says), "{claims}: {status:?}");
        assert!(status.message().contains("node-a"), "{claims}: {status:?}");
        guard.count(&refusal);
    }
    let counted: u64 = guard.refused().iter().map(|(_, n)| n).sum();
    assert_eq!(counted, 6);
    assert!(guard.refused().contains(&("cidr", 3)));
}

#[test]
fn certificates_for_nobody_or_for_several_nodes_are_refused() {
    let pki = Pki::new("ca").unwrap();
    let guard = proven();
    let ids = Identifiers::parse("host=node-a");
    let nobody = peer(&pki.issue_client("konnectivity-agent").unwrap().cert_pem);
    let e = guard.authorize(Some(&nobody), &ids, &nodes()).unwrap_err();
    assert!(matches!(e, Refusal::UnknownNode { .. }), "{e}");
    assert!(e.to_string().contains("CN=konnectivity-agent"), "{e}");
    let stranger = peer(&pki.issue_node_client("node-z").unwrap().cert_pem);
    let e = guard
        .authorize(Some(&stranger), &ids, &nodes())
        .unwrap_err();
    assert!(matches!(e, Refusal::UnknownNode { .. }), "{e}");
    let both = peer(
        &pki.issue_client_dns("x", &["node-a", "node-b"])
            .unwrap()
            .cert_pem,
    );
    let e = guard.authorize(Some(&both), &ids, &nodes()).unwrap_err();
    assert!(matches!(e, Refusal::SeveralNodes { .. }), "{e}");
    let e = guard.authorize(None, &ids, &nodes()).unwrap_err();
    assert_eq!(e, Refusal::NoCertificate);
    assert_eq!(e.status().code(), tonic::Code::Unauthenticated);
    // A CN that merely contains a node name proves nothing.
    let lookalike = peer(&pki.issue_client("node-a").unwrap().cert_pem);
    assert!(guard.authorize(Some(&lookalike), &ids, &nodes()).is_err());
}

#[test]
fn claimed_mode_checks_nothing() {
    let guard = Guard::new(AgentIdentity::Claimed, &Registry::new());
    let got = guard.authorize(None, &Identifiers::parse("cidr=0.0.0.0/0"), &nodes());
    assert_eq!(got, Ok(None));
}

fn hub(mode: AgentIdentity) -> Hub {
    let options = crate::Options {
        server_id: "cp-1".into(),
        server_count: 1,
        max_conn_buffer: crate::Options::DEFAULT_MAX_CONN_BUFFER,
        stall_timeout: crate::Options::DEFAULT_STALL_TIMEOUT,
        dial_timeout: std::time::Duration::from_secs(10),
        identity: Guard::new(mode, &Registry::new()),
    };
    Hub::new(options, &nodes())
}

#[tokio::test]
async fn an_agent_id_of_another_node_is_refused_never_replaced() {
    let pki = Pki::new("ca").unwrap();
    let hub = hub(AgentIdentity::Proven);
    let a = peer(&pki.issue_node_client("node-a").unwrap().cert_pem);
    let b = peer(&pki.issue_node_client("node-b").unwrap().cert_pem);
    let admit = |p: &AgentPeer, ids: &str| {
        admit(
            &hub,
            Some(p),
            "agent-b".into(),
            Identifiers::parse(ids),
            NONE,
        )
    };
    let real_b = admit(&b, "host=node-b").expect("node-b's own agent");
    let status = admit(&a, "host=node-a")
        .err()
        .expect("node-a took node-b's ID");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("already held by an agent of node-b"),
        "{status:?}"
    );
    assert!(
        !real_b.agent.ended.is_cancelled(),
        "the real agent was replaced"
    );
    assert_eq!(hub.agents("node-b").len(), 1);
    assert!(hub.agents("node-a").is_empty());
    assert!(hub
        .options()
        .identity
        .refused()
        .contains(&("agent_id_taken", 1)));
    // The same node reconnecting queues behind its own older stream
    // (hub/standby.rs) and replaces it once it has settled.
    let again = admit(&b, "host=node-b").expect("node-b reconnecting");
    assert!(hub.is_standby(&again.agent));
    hub.settle(&again.agent);
    assert!(real_b.agent.ended.is_cancelled());
    assert_eq!(hub.agents("node-b").len(), 1);
    drop(again);
}

#[tokio::test]
async fn a_proven_agent_serves_only_its_node_and_claimed_agents_what_they_name() {
    let pki = Pki::new("ca").unwrap();
    let proven = hub(AgentIdentity::Proven);
    let a = peer(&pki.issue_node_client("node-a").unwrap().cert_pem);
    let _r = admit(&proven, Some(&a), "x".into(), Identifiers::default(), NONE).unwrap();
    assert_eq!(proven.agents("node-a").len(), 1);
    assert!(proven.agents("node-b").is_empty());
    let claimed = hub(AgentIdentity::Claimed);
    let ids = Identifiers::parse("host=node-b");
    let _r = admit(&claimed, None, "y".into(), ids, NONE).unwrap();
    assert_eq!(claimed.agents("node-b").len(), 1);
}
