//! The embedded example parses clean once its files exist, and documents
//! every key.

use super::kit::Kit;
use sshbridge_config::{BatchSize, Listen, Route, EXAMPLE};

/// The example with every `/etc/...` path moved into the kit's dir, and the
/// files created (private keys mode 0600).
fn localized(kit: &Kit) -> String {
    let root = kit.dir.path().display().to_string();
    for chunk in EXAMPLE.split('"').skip(1).step_by(2) {
        if let Some(rel) = chunk.strip_prefix("/etc/") {
            let private = rel.ends_with(".key") || rel.ends_with("id_ed25519");
            kit.write_file(
                &format!("etc/{rel}"),
                "x\n",
                if private { 0o600 } else { 0o644 },
            );
        }
    }
    EXAMPLE.replace("\"/etc/", &format!("\"{root}/etc/"))
}

#[test]
fn example_parses_clean_with_its_files_present() {
    let kit = Kit::new();
    let text = localized(&kit);
    let cfg = kit
        .load("example.toml", &text)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.bridge.id, "cp-1");
    assert_eq!(cfg.nodes.len(), 2);
    assert_eq!(cfg.nodes[0].ssh_address.to_string(), "203.0.113.5:22");
    assert_eq!(cfg.nodes[1].ssh_address.to_string(), "10.0.0.6:22");
    assert_eq!(cfg.nodes[1].route, Route::Ssh);
    assert_eq!(cfg.migration.batch_size, BatchSize::Percent(10.0));
    assert_eq!(
        cfg.admin.listen,
        Listen::Unix("/run/sshbridge/admin.sock".into())
    );
    assert_eq!(cfg.ssh.max_stream_buffer, 2 << 20);
    assert_eq!(cfg.egress.max_request_head, 8 << 10);
    let k = cfg.konnectivity.expect("konnectivity section");
    assert!(k.client_ca.expect("client_ca").starts_with(kit.dir.path()));
    assert!(cfg.egress.http_connect_tcp.is_none());
    assert!(cfg.kubernetes.is_none());
}

#[test]
fn example_kubernetes_section_works_when_uncommented() {
    let kit = Kit::new();
    let text = localized(&kit)
        .replace("# [kubernetes]", "[kubernetes]")
        .replace("# kubeconfig = ", "kubeconfig = ");
    let cfg = kit
        .load("example.toml", &text)
        .unwrap_or_else(|e| panic!("{e}"));
    let kube = cfg.kubernetes.expect("kubernetes section");
    let path = kube.kubeconfig.expect("kubeconfig");
    assert!(path.ends_with("etc/sshbridge/kubeconfig"), "{path:?}");
    assert_eq!(kube.context, None);
}

#[test]
fn example_tcp_frontend_line_works_when_uncommented() {
    let kit = Kit::new();
    let text = localized(&kit).replace("# http_connect_tcp = ", "http_connect_tcp = ");
    let cfg = kit
        .load("example.toml", &text)
        .unwrap_or_else(|e| panic!("{e}"));
    let tcp = cfg.egress.http_connect_tcp.expect("tcp frontend");
    assert_eq!(tcp.listen.to_string(), "127.0.0.1:8131");
    assert!(tcp.key.ends_with("etc/sshbridge/egress.key"));
}

#[test]
fn example_documents_every_key_with_its_default() {
    let keys = [
        "id",
        "http_connect_uds",
        "http_connect_tcp",
        "grpc_uds",
        "dial_timeout",
        "service_cidrs",
        "max_request_head",
        "request_head_timeout",
        "stream_idle_timeout",
        "user",
        "identity",
        "known_hosts",
        "port",
        "connect_timeout",
        "keepalive_interval",
        "keepalive_max",
        "backoff",
        "max_concurrent_handshakes",
        "max_stream_buffer",
        "interval",
        "kubelet_port",
        "kubelet_path",
        "kubelet_ca",
        "down_after",
        "up_after",
        "listen",
        "agent_listen",
        "cert",
        "key",
        "client_ca",
        "server_count",
        "extensions",
        "credit_window",
        "stall_timeout",
        "stall_window",
        "half_close_idle",
        "max_connections_per_agent",
        "max_queued_control",
        "agent_auth",
        "audiences",
        "service_accounts",
        "cache_ttl",
        "store",
        "batch_size",
        "shadow_probes",
        "max_failure_ratio",
        "max_latency_ratio",
        "soak",
        "lease",
        "lease_duration",
        "renew_deadline",
        "retry_period",
        "kubeconfig",
        "context",
        "source",
        "node_selector",
        "address_types",
        "ssh_port",
        "ssh_address_annotation",
        "watch_grace",
        "status",
        "status_interval",
        "name",
        "address",
        "ssh_address",
        "pod_cidrs",
        "route",
    ];
    let lines: Vec<&str> = EXAMPLE.lines().collect();
    for key in keys {
        let at = lines
            .iter()
            .position(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("example lacks key {key}"));
        // The nearest line above that is not another key must be a comment.
        let above = lines[..at]
            .iter()
            .rev()
            .find(|l| !l.contains(" = ") || l.starts_with('#'));
        assert!(
            above.is_some_and(|l| l.starts_with('#')),
            "example key {key} has no comment above it"
        );
    }
    assert!(EXAMPLE.matches("Default").count() >= 30);
}
