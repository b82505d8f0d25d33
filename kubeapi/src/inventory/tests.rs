//! Node objects to nodes: address preference, pod CIDRs, the SSH address
//! annotation, and the reasons a Node cannot be served.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node as KubeNode, NodeAddress, NodeSpec, NodeStatus};
use sshbridge_config::{Inventory, InventorySource};

use super::{found, Found};

fn settings() -> Inventory {
    Inventory {
        source: InventorySource::Kubernetes,
        node_selector: None,
        address_types: vec!["InternalIP".into(), "ExternalIP".into()],
        ssh_port: 22,
        ssh_address_annotation: "sshbridge.io/ssh-address".into(),
        watch_grace: Duration::from_secs(30),
    }
}

fn node(addresses: &[(&str, &str)], annotations: &[(&str, &str)]) -> KubeNode {
    let mut n = KubeNode::default();
    n.metadata.name = Some("n1".into());
    if !annotations.is_empty() {
        let map: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        n.metadata.annotations = Some(map);
    }
    n.status = Some(NodeStatus {
        addresses: Some(
            addresses
                .iter()
                .map(|(t, a)| NodeAddress {
                    type_: t.to_string(),
                    address: a.to_string(),
                })
                .collect(),
        ),
        ..NodeStatus::default()
    });
    n
}

fn served(f: Found) -> sshbridge_config::Node {
    match f {
        Found::Node(node) => node,
        Found::Unservable(why) => panic!("unservable: {why}"),
    }
}

fn refused(f: Found) -> String {
    match f {
        Found::Unservable(why) => why,
        other => panic!("expected unservable, got {other:?}"),
    }
}

#[test]
fn address_follows_the_preference_order_not_the_list_order() {
    let n = node(
        &[
            ("Hostname", "n1"),
            ("ExternalIP", "203.0.113.9"),
            ("InternalIP", "10.0.0.9"),
        ],
        &[],
    );
    let spec = served(found(&n, &settings()));
    assert_eq!(spec.name, "n1");
    assert_eq!(spec.address.to_string(), "10.0.0.9");
    assert_eq!(spec.ssh_address.to_string(), "10.0.0.9:22");
    assert!(spec.pod_cidrs.is_empty());

    let mut s = settings();
    s.address_types = vec!["ExternalIP".into(), "InternalIP".into()];
    s.ssh_port = 2222;
    let spec = served(found(&n, &s));
    assert_eq!(spec.ssh_address.to_string(), "203.0.113.9:2222");
}

#[test]
fn no_address_of_a_preferred_type_is_a_reason_naming_what_is_there() {
    let n = node(&[("Hostname", "n1"), ("InternalIP", "not-an-ip")], &[]);
    let why = refused(found(&n, &settings()));
    assert!(why.contains("InternalIP, ExternalIP"), "{why}");
    assert!(why.contains("Hostname n1"), "{why}");
}

#[test]
fn pod_cidrs_come_from_pod_cidrs_else_pod_cidr() {
    let mut n = node(&[("InternalIP", "10.0.0.9")], &[]);
    n.spec = Some(NodeSpec {
        pod_cidr: Some("10.244.9.0/24".into()),
        ..NodeSpec::default()
    });
    let spec = served(found(&n, &settings()));
    assert_eq!(spec.pod_cidrs.len(), 1);
    assert_eq!(spec.pod_cidrs[0].to_string(), "10.244.9.0/24");
    n.spec = Some(NodeSpec {
        pod_cidr: Some("10.244.9.0/24".into()),
        pod_cidrs: Some(vec!["10.244.9.0/24".into(), "fd00:9::/64".into()]),
        ..NodeSpec::default()
    });
    let spec = served(found(&n, &settings()));
    assert_eq!(spec.pod_cidrs.len(), 2);
    n.spec = Some(NodeSpec {
        pod_cidrs: Some(vec!["10.244.9.0/33".into()]),
        ..NodeSpec::default()
    });
    assert!(refused(found(&n, &settings())).contains("spec.podCIDRs"));
}

#[test]
fn ssh_address_annotation_forms_and_garbage() {
    let s = settings();
    for (value, want) in [
        ("127.0.0.9:2200", "127.0.0.9:2200"),
        ("127.0.0.9", "127.0.0.9:22"),
        ("[::1]:2200", "[::1]:2200"),
        ("sshd.Node1.example:2200", "sshd.node1.example:2200"),
        ("sshd.example", "sshd.example:22"),
    ] {
        let n = node(
            &[("InternalIP", "10.0.0.9")],
            &[("sshbridge.io/ssh-address", value)],
        );
        let spec = served(found(&n, &s));
        assert_eq!(spec.ssh_address.to_string(), want, "{value}");
        assert_eq!(spec.address.to_string(), "10.0.0.9");
    }
    for value in ["*.example:22", "host:0", "host:x", "", "a b"] {
        let n = node(
            &[("InternalIP", "10.0.0.9")],
            &[("sshbridge.io/ssh-address", value)],
        );
        let why = refused(found(&n, &s));
        assert!(why.contains("sshbridge.io/ssh-address"), "{value}: {why}");
    }
}
