use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::mounts::{dirs, volume_name};
use super::*;

/// A valid config in `dir` (keys mode 0600), with `extra` TOML appended
/// to its `[egress]`/`[admin]`/`[konnectivity]` choices.
pub(super) fn config(
    dir: &Path,
    egress: &str,
    admin: &str,
    konnectivity: &str,
) -> sshbridge_config::Config {
    for f in [
        "id_ed25519",
        "known_hosts",
        "k.crt",
        "k.key",
        "ca.crt",
        "admin.token",
    ] {
        let p = dir.join(f);
        std::fs::write(&p, "x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // A TCP admin listener needs callers to authenticate.
    let auth = if admin.starts_with("unix:") {
        ""
    } else {
        "token_file = \"admin.token\"\n"
    };
    let text = format!(
        "[bridge]\nid = \"cp-1\"\n[egress]\n{egress}\n[ssh]\nidentity = \"id_ed25519\"\n\
         known_hosts = \"known_hosts\"\n[admin]\nlisten = {admin:?}\n{auth}{konnectivity}\n\
         [migration]\nstore = \"file:/var/lib/sshbridge/migration.json\"\n\
         [[node]]\nname = \"node-a\"\naddress = \"10.0.0.5\"\n"
    );
    let path = dir.join("sshbridge.toml");
    std::fs::write(&path, &text).unwrap();
    sshbridge_config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"))
}

const KONN: &str = "[konnectivity]\nagent_listen = \"0.0.0.0:8132\"\ncert = \"k.crt\"\nkey = \"k.key\"\nclient_ca = \"ca.crt\"";

#[test]
fn egress_protocol_follows_the_configured_socket_unless_told() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(
        d.path(),
        "http_connect_uds = \"/run/sshbridge/egress.sock\"",
        "unix:/run/sshbridge/admin.sock",
        "",
    );
    let y = egress_selector(&cfg, &EgressOptions::default()).unwrap();
    assert!(y.contains("proxyProtocol: HTTPConnect\n"), "{y}");
    assert!(
        y.contains("udsName: \"/run/sshbridge/egress.sock\"\n"),
        "{y}"
    );
    let err = egress_selector(
        &cfg,
        &EgressOptions {
            protocol: Some(EgressProtocol::Grpc),
            uds: None,
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("egress.grpc_uds is not set"),
        "{err}"
    );
    let upstream = EgressOptions {
        protocol: None,
        uds: Some("/etc/kubernetes/konnectivity-server/konnectivity-server.socket".into()),
    };
    let y = egress_selector(&cfg, &upstream).unwrap();
    assert!(y.contains("proxyProtocol: GRPC\n"), "{y}");
    assert!(y.contains("konnectivity-server.socket\""), "{y}");
}

#[test]
fn agent_needs_a_dialable_server_address() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "", "127.0.0.1:8133", KONN);
    let err = konnectivity_agent(&cfg, &AgentOptions::default()).unwrap_err();
    assert!(err.to_string().contains("--server-address"), "{err}");
    let opts = AgentOptions {
        server_address: Some("cp.example.internal".into()),
        image: Some("registry.k8s.io/kas-network-proxy/proxy-agent:v0.33.0".into()),
        ..AgentOptions::default()
    };
    let y = konnectivity_agent(&cfg, &opts).unwrap();
    assert!(
        y.contains("\"--proxy-server-host=cp.example.internal\""),
        "{y}"
    );
    assert!(
        y.contains("\"--agent-cert=/var/lib/kubelet/pki/kubelet-client-current.pem\""),
        "{y}"
    );
    // The opt-out: every agent presents the shared certificate of the Secret.
    let shared = format!("{KONN}\nidentity = \"claimed\"");
    let cfg = config(d.path(), "", "unix:/run/sshbridge/admin.sock", &shared);
    let y = konnectivity_agent(&cfg, &opts).unwrap();
    assert!(
        y.contains("\"--agent-cert=/etc/konnectivity-agent/tls.crt\"")
            && !y.contains("kubelet-client-current.pem")
            && y.contains("runAsNonRoot: true"),
        "{y}"
    );
    assert_eq!(
        AgentStyle::of_image("ghcr.io/acme/sshbridge:1"),
        AgentStyle::Sshbridge
    );
}

#[test]
fn mounts_cover_every_file_with_the_fewest_directories() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "", "unix:/run/sshbridge/admin.sock", KONN);
    let got: Vec<(String, bool)> = dirs(&cfg)
        .into_iter()
        .map(|d| (d.path.display().to_string(), d.writable))
        .collect();
    let mut want = vec![
        (d.path().display().to_string(), false),
        ("/run/sshbridge".to_string(), true),
        ("/var/lib/sshbridge".to_string(), true),
    ];
    want.sort();
    assert_eq!(got, want);
    let taken = vec!["etc-sshbridge".to_string()];
    assert_eq!(
        volume_name(Path::new("/etc/sshbridge"), &[]),
        "etc-sshbridge"
    );
    assert_eq!(
        volume_name(Path::new("/etc/SSH_bridge/"), &taken),
        "etc-ssh-bridge"
    );
    assert_eq!(
        volume_name(Path::new("/etc/sshbridge"), &taken),
        "etc-sshbridge-2"
    );
}
