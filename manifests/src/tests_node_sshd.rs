use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

/// A config with two nodes, kubelet port 10250, a pod CIDR per node and a
/// service CIDR.
fn config(dir: &Path, pod_a: &str) -> sshbridge_config::Config {
    for f in ["id_ed25519", "known_hosts"] {
        let p = dir.join(f);
        std::fs::write(&p, "x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let text = format!(
        "[bridge]\nid = \"cp-1\"\n[egress]\nhttp_connect_uds = \"/run/sshbridge/egress.sock\"\n\
         service_cidrs = [\"10.96.0.0/12\"]\n[ssh]\nuser = \"tunnel\"\nidentity = \"id_ed25519\"\n\
         known_hosts = \"known_hosts\"\n[migration]\nstore = \"file:/var/lib/sshbridge/m.json\"\n\
         [[node]]\nname = \"node-a\"\naddress = \"10.0.0.5\"\npod_cidrs = [\"{pod_a}\"]\n\
         [[node]]\nname = \"node-b\"\naddress = \"fd00::7\"\n"
    );
    let path = dir.join("sshbridge.toml");
    std::fs::write(&path, &text).unwrap();
    sshbridge_config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"))
}

fn opts() -> NodeSshdOptions {
    NodeSshdOptions {
        principals_file: PathBuf::from("/etc/ssh/sshbridge_principals"),
        ..NodeSshdOptions::default()
    }
}

#[test]
fn the_match_block_permits_only_the_kubelet_and_refuses_everything_else() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "10.244.1.0/24");
    let text = node_sshd(&cfg, &opts()).unwrap();
    for want in [
        "Match User tunnel\n",
        "    AllowTcpForwarding local\n",
        "    PermitOpen 10.0.0.5:10250\n",
        "    PermitOpen [fd00::7]:10250\n",
        "    PermitListen none\n",
        "    GatewayPorts no\n",
        "    AllowStreamLocalForwarding no\n",
        "    AllowAgentForwarding no\n",
        "    X11Forwarding no\n",
        "    PermitTunnel no\n",
        "    PermitTTY no\n",
        "    ForceCommand /bin/cat >/dev/null\n",
        "# ---- node node-a (10.0.0.5) ----\n",
        "# Not permitted here: pod CIDR 10.244.1.0/24",
        "# Not permitted here: service CIDR 10.96.0.0/12",
        "AllowTcpForwarding local: 6.2",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("    TrustedUserCAKeys"), "{text}");
    // One block per node.
    assert_eq!(text.matches("\nMatch User ").count(), 2, "{text}");
}

#[test]
fn scope_node_lists_every_pod_address_and_any_opens_everything() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "10.244.1.0/30");
    let node = NodeSshdOptions {
        scope: PermitScope::Node,
        nodes: vec!["node-a".into()],
        extra_permits: vec!["localhost:9000".into()],
        ..opts()
    };
    let text = node_sshd(&cfg, &node).unwrap();
    assert!(
        text.contains("PermitOpen 10.0.0.5:* 10.244.1.1:* 10.244.1.2:* localhost:9000\n"),
        "{text}"
    );
    assert!(!text.contains("node-b"), "{text}");
    assert!(!text.contains("pod CIDR"), "{text}");
    let any = NodeSshdOptions {
        scope: PermitScope::Any,
        ..opts()
    };
    let text = node_sshd(&cfg, &any).unwrap();
    assert!(text.contains("    PermitOpen any\n"), "{text}");
    assert!(!text.contains("Not permitted"), "{text}");
}

#[test]
fn scope_node_refuses_a_pod_cidr_too_large_to_list() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "10.244.0.0/16");
    let o = NodeSshdOptions {
        scope: PermitScope::Node,
        ..opts()
    };
    let err = node_sshd(&cfg, &o).unwrap_err();
    assert!(err.to_string().contains("--scope any"), "{err}");
    assert!(err.to_string().contains("65537"), "{err}");
}

#[test]
fn the_authorized_keys_line_restricts_the_key() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "10.244.1.0/24");
    let o = NodeSshdOptions {
        form: NodeSshdForm::AuthorizedKeys,
        nodes: vec!["node-a".into()],
        public_key: Some("ssh-ed25519 AAAAC3Nza bridge\n".into()),
        ..opts()
    };
    let text = node_sshd(&cfg, &o).unwrap();
    assert!(
        text.contains(
            "\nrestrict,port-forwarding,permitopen=\"10.0.0.5:10250\",command=\"/bin/cat >/dev/null\" ssh-ed25519 AAAAC3Nza bridge\n"
        ),
        "{text}"
    );
    let none = NodeSshdOptions {
        public_key: None,
        ..o
    };
    assert_eq!(
        node_sshd(&cfg, &none).unwrap_err(),
        NodeSshdError::NoPublicKey
    );
}

#[test]
fn certificate_mode_trusts_the_user_ca_for_one_principal() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "10.244.1.0/24");
    let ca = (
        PathBuf::from("/etc/ssh/sshbridge_user_ca.pub"),
        "ssh-ed25519 AAAAca user-ca".to_string(),
    );
    let o = NodeSshdOptions {
        user_ca: Some(ca.clone()),
        principal: Some("sshbridge-cp-1".into()),
        nodes: vec!["node-a".into()],
        ..opts()
    };
    let text = node_sshd(&cfg, &o).unwrap();
    for want in [
        "    TrustedUserCAKeys /etc/ssh/sshbridge_user_ca.pub\n",
        "    AuthorizedPrincipalsFile /etc/ssh/sshbridge_principals\n",
        "    AuthorizedKeysFile none\n",
        "principal \"sshbridge-cp-1\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let ak = NodeSshdOptions {
        form: NodeSshdForm::AuthorizedKeys,
        ..o
    };
    let text = node_sshd(&cfg, &ak).unwrap();
    assert!(
        text.contains("\ncert-authority,principals=\"sshbridge-cp-1\",restrict,port-forwarding,permitopen=\"10.0.0.5:10250\",command=\"/bin/cat >/dev/null\" ssh-ed25519 AAAAca user-ca\n"),
        "{text}"
    );
}

#[test]
fn bad_permits_and_unknown_nodes_are_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "10.244.1.0/24");
    for bad in ["10.0.0.1", "a b:1", "x:\"1", "host:0", "[nothex]:1", ":80"] {
        let o = NodeSshdOptions {
            extra_permits: vec![bad.into()],
            ..opts()
        };
        assert_eq!(
            node_sshd(&cfg, &o).unwrap_err(),
            NodeSshdError::BadPermit(bad.into()),
            "{bad}"
        );
    }
    for good in ["*:443", "[::1]:*", "node-a.example:10255"] {
        let o = NodeSshdOptions {
            extra_permits: vec![good.into()],
            ..opts()
        };
        assert!(node_sshd(&cfg, &o).is_ok(), "{good}");
    }
    let o = NodeSshdOptions {
        nodes: vec!["node-z".into()],
        ..opts()
    };
    assert!(node_sshd(&cfg, &o)
        .unwrap_err()
        .to_string()
        .contains("no [[node]] named \"node-z\""));
}
