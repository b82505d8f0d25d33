//! `sshbridge manifests ...` on a config in a temporary directory: each
//! manifest carries the operator's values where kube-apiserver, the
//! kubelet or systemd read them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A config with the given `[egress]`, `[admin] listen` and
/// `[konnectivity] agent_listen`, and the key files it names (mode 0600).
fn config(dir: &Path, egress: &str, admin: &str, agent_listen: &str) -> PathBuf {
    for f in [
        "id_ed25519",
        "known_hosts",
        "konn.crt",
        "konn.key",
        "agent-ca.crt",
        "admin.token",
    ] {
        let p = dir.join(f);
        std::fs::write(&p, "placeholder\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let state = dir.join("state");
    // A TCP admin listener needs callers to authenticate.
    let admin_auth = if admin.starts_with("unix:") {
        ""
    } else {
        "token_file = \"admin.token\"\n"
    };
    let text = format!(
        r#"[bridge]
id = "cp-1"
[egress]
{egress}
[ssh]
identity = "id_ed25519"
known_hosts = "known_hosts"
[admin]
listen = "{admin}"
{admin_auth}[konnectivity]
agent_listen = "{agent_listen}"
cert = "konn.crt"
key = "konn.key"
client_ca = "agent-ca.crt"
[migration]
store = "file:{}/migration.json"
[[node]]
name = "node-a"
address = "10.0.0.5"
"#,
        state.display()
    );
    let path = dir.join("sshbridge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn sshbridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sshbridge"))
        .args(args)
        .output()
        .expect("sshbridge runs")
}

fn ok(args: &[&str]) -> String {
    let out = sshbridge(args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// No tabs, and every `---`-separated document starts with apiVersion/kind.
fn assert_yaml_shape(y: &str) {
    assert!(!y.contains('\t'), "tabs are not YAML indentation:\n{y}");
    for doc in y.split("\n---\n") {
        let body: Vec<&str> = doc
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .collect();
        assert!(body[0].starts_with("apiVersion: "), "{doc}");
        assert!(body[1].starts_with("kind: "), "{doc}");
    }
}

#[test]
fn egress_selector_uses_the_configured_socket_and_protocol() {
    let d = tempfile::tempdir().unwrap();
    let http = config(
        d.path(),
        r#"http_connect_uds = "/run/sshbridge/egress.sock""#,
        "unix:/run/sshbridge/admin.sock",
        "192.0.2.10:8132",
    );
    let c = http.to_str().unwrap();
    let y = ok(&["manifests", "egress-selector", "--config", c]);
    assert_yaml_shape(&y);
    assert!(
        y.contains("apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\n"),
        "{y}"
    );
    assert!(y.contains("- name: cluster\n"), "{y}");
    assert!(y.contains("    proxyProtocol: HTTPConnect\n"), "{y}");
    assert!(
        y.contains("        udsName: \"/run/sshbridge/egress.sock\"\n"),
        "{y}"
    );

    let y = ok(&[
        "manifests",
        "egress-selector",
        "-c",
        c,
        "--uds",
        "/etc/kubernetes/konnectivity-server/konnectivity-server.socket",
    ]);
    assert!(y.contains("proxyProtocol: GRPC\n"), "{y}");
    assert!(
        y.contains("udsName: \"/etc/kubernetes/konnectivity-server/konnectivity-server.socket\""),
        "{y}"
    );

    let out = sshbridge(&[
        "manifests",
        "egress-selector",
        "-c",
        c,
        "--protocol",
        "grpc",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("egress.grpc_uds is not set") && err.contains("--uds"),
        "{err}"
    );
}

#[test]
fn konnectivity_agent_announces_the_node_and_dials_the_configured_port() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "", "127.0.0.1:8133", "192.0.2.10:9132");
    let c = cfg.to_str().unwrap();
    let y = ok(&["manifests", "konnectivity-agent", "-c", c]);
    assert_yaml_shape(&y);
    assert!(
        y.contains("kind: ServiceAccount\n") && y.contains("kind: DaemonSet\n"),
        "{y}"
    );
    assert!(y.contains("command: [\"sshbridge\", \"agent\"]"), "{y}");
    assert!(y.contains("- \"--server=192.0.2.10:9132\""), "{y}");
    assert!(
        y.contains("- \"--identifiers=host=$(NODE_NAME)&ipv4=$(HOST_IP)\""),
        "{y}"
    );
    assert!(
        y.contains("fieldPath: spec.nodeName") && y.contains("fieldPath: status.hostIP"),
        "{y}"
    );
    // Identity is proven: each agent presents its node's kubelet client
    // certificate, mounted from the host; the Secret holds the server CA.
    assert!(
        y.contains("- \"--cert=/var/lib/kubelet/pki/kubelet-client-current.pem\"")
            && y.contains("- \"--key=/var/lib/kubelet/pki/kubelet-client-current.pem\""),
        "{y}"
    );
    assert!(
        y.contains("path: \"/var/lib/kubelet/pki\"") && y.contains("runAsUser: 0\n"),
        "{y}"
    );
    assert!(!y.contains("tls.crt\""), "no shared certificate: {y}");
    assert!(y.contains("secretName: konnectivity-agent-certs"), "{y}");

    let y = ok(&[
        "manifests",
        "konnectivity-agent",
        "-c",
        c,
        "--namespace",
        "konnectivity",
        "--server-address",
        "cp.internal.example",
        "--image",
        "registry.k8s.io/kas-network-proxy/proxy-agent:v0.33.0",
    ]);
    for want in [
        "namespace: \"konnectivity\"",
        "- \"--proxy-server-host=cp.internal.example\"",
        "- \"--proxy-server-port=9132\"",
        "- \"--ca-cert=/etc/konnectivity-agent/ca.crt\"",
        "- \"--agent-identifiers=host=$(NODE_NAME)&ipv4=$(HOST_IP)\"",
        "- \"--agent-cert=/var/lib/kubelet/pki/kubelet-client-current.pem\"",
    ] {
        assert!(y.contains(want), "missing {want} in:\n{y}");
    }

    let wildcard = config(d.path(), "", "127.0.0.1:8133", "0.0.0.0:8132");
    let out = sshbridge(&[
        "manifests",
        "konnectivity-agent",
        "-c",
        wildcard.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server-address"));
}

#[test]
fn kubernetes_version_drops_what_the_release_does_not_know_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "", "127.0.0.1:8133", "192.0.2.10:9132");
    let c = cfg.to_str().unwrap();
    let agent = |v: &str| {
        ok(&[
            "manifests",
            "konnectivity-agent",
            "-c",
            c,
            "--kubernetes-version",
            v,
        ])
    };
    let newest = ok(&["manifests", "konnectivity-agent", "-c", c]);
    assert_eq!(newest, agent("1.37"), "the default is the newest release");
    assert!(newest.contains("\n# For Kubernetes 1.37 ") && newest.contains("maxSurge: 1\n"));
    assert_eq!(
        agent("1.22"),
        agent("v1.22.17"),
        "/version's form is accepted"
    );
    assert!(agent("1.22").contains("maxSurge: 1\n      maxUnavailable: 0\n"));
    for v in ["1.20", "1.21"] {
        let y = agent(v);
        assert_yaml_shape(&y);
        assert!(
            !y.contains("maxSurge:") && y.contains("maxUnavailable: 1\n"),
            "{y}"
        );
        assert!(
            y.contains(&format!(
                "\n# For {v}: DaemonSet updateStrategy.rollingUpdate.maxSurge left out"
            )),
            "{y}"
        );
    }
    let pod = ok(&[
        "manifests",
        "static-pod",
        "-c",
        c,
        "--kubernetes-version",
        "1.20",
    ]);
    assert!(pod.contains("\n# For Kubernetes 1.20 "), "{pod}");
    for (bad, why) in [
        (
            "1.19",
            "Kubernetes 1.19 is outside the range sshbridge's manifests support, 1.20 to 1.37",
        ),
        ("1.38", "Kubernetes 1.38 is outside the range"),
        ("latest", "is not a Kubernetes version"),
    ] {
        let out = sshbridge(&[
            "manifests",
            "konnectivity-agent",
            "-c",
            c,
            "--kubernetes-version",
            bad,
        ]);
        assert_eq!(out.status.code(), Some(2), "{bad}: a usage error");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn static_pod_probes_tcp_admin_and_mounts_what_the_daemon_uses() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "", "127.0.0.1:8133", "192.0.2.10:8132");
    let c = cfg.to_str().unwrap();
    let y = ok(&["manifests", "static-pod", "-c", c, "--drain-timeout", "40s"]);
    assert_yaml_shape(&y);
    assert!(
        y.contains("namespace: kube-system\n") && y.contains("hostNetwork: true\n"),
        "{y}"
    );
    assert!(
        y.contains(&format!(
            "\"run\", \"--config\", \"{c}\", \"--drain-timeout\", \"40s\""
        )),
        "{y}"
    );
    assert!(y.contains("terminationGracePeriodSeconds: 50\n"), "{y}");
    // The image defaults to uid 65532; the host's keys are root-owned 0600.
    assert!(y.contains("runAsUser: 0\n"), "{y}");
    assert!(y.contains("path: /livez\n        port: 8133"), "{y}");
    assert!(y.contains("path: /readyz\n        port: 8133"), "{y}");
    let dir = d.path().display().to_string();
    assert!(
        y.contains(&format!("path: \"{dir}\"\n      type: Directory\n")),
        "{y}"
    );
    assert!(
        y.contains(&format!(
            "path: \"{dir}/state\"\n      type: DirectoryOrCreate\n"
        )),
        "{y}"
    );
    assert!(
        y.contains("path: \"/run/sshbridge\"\n      type: DirectoryOrCreate\n"),
        "{y}"
    );

    let unix = config(
        d.path(),
        "",
        "unix:/run/sshbridge/admin.sock",
        "192.0.2.10:8132",
    );
    let y = ok(&["manifests", "static-pod", "-c", unix.to_str().unwrap()]);
    assert!(
        !y.contains("httpGet:") && !y.contains("readinessProbe:"),
        "{y}"
    );
    assert!(
        y.contains("\"--admin\", \"unix:/run/sshbridge/admin.sock\""),
        "{y}"
    );
    assert!(
        y.contains("# The admin API listens on /run/sshbridge/admin.sock (a unix socket)"),
        "{y}"
    );
}

#[test]
fn systemd_unit_reloads_drains_and_sandboxes() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(
        d.path(),
        "",
        "unix:/run/sshbridge/admin.sock",
        "192.0.2.10:443",
    );
    let c = cfg.to_str().unwrap();
    let u = ok(&[
        "manifests",
        "systemd",
        "-c",
        c,
        "--drain-timeout",
        "25s",
        "--bin",
        "/opt/sb/sshbridge",
    ]);
    for want in [
        &format!("ExecStart=/opt/sb/sshbridge run --config {c} --drain-timeout 25s\n") as &str,
        "ExecReload=/bin/kill -HUP $MAINPID\n",
        "KillSignal=SIGTERM\n",
        "TimeoutStopSec=35\n",
        "RuntimeDirectory=sshbridge\n",
        "RuntimeDirectoryMode=0750\n",
        "NoNewPrivileges=yes\n",
        "ProtectSystem=strict\n",
        &format!("ReadWritePaths={}/state\n", d.path().display()),
        // agent_listen on port 443 needs the one capability, nothing more.
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n",
    ] {
        assert!(u.contains(want), "missing {want:?} in:\n{u}");
    }
    assert!(
        u.starts_with("# ")
            && u.contains("\n[Unit]\n")
            && u.contains("\n[Service]\n")
            && u.contains("\n[Install]\n"),
        "{u}"
    );
}

#[test]
fn a_missing_config_names_the_file_and_the_flag() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nope.toml");
    let out = sshbridge(&["manifests", "systemd", "-c", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope.toml") && err.contains("--config"),
        "{err}"
    );
}
