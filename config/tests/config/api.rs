//! Resolved defaults, path resolution, and how errors read.

use std::path::Path;
use std::time::Duration;

use super::kit::Kit;
use sshbridge_config::{BatchSize, ConfigError, Listen, Route};

const MINIMAL: &str = r#"
[ssh]
identity = "id_ed25519"
known_hosts = "@DIR@/known_hosts"
port = 2222

[[node]]
name = "node-a"
address = "10.0.0.5"

[[node]]
name = "node-b"
address = "fd00::6"
"#;

#[test]
fn defaults_are_resolved() {
    let kit = Kit::new();
    let cfg = kit
        .load("minimal.toml", MINIMAL)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !cfg.bridge.id.is_empty(),
        "bridge id defaults to the host name"
    );
    assert_eq!(
        cfg.egress.http_connect_uds.as_deref(),
        Some(Path::new("/run/sshbridge/egress.sock"))
    );
    assert!(cfg.egress.grpc_uds.is_none() && cfg.egress.http_connect_tcp.is_none());
    assert!(cfg.egress.service_cidrs.is_empty());
    assert_eq!(cfg.egress.dial_timeout, Duration::from_secs(10));
    assert_eq!(cfg.egress.request_head_timeout, Duration::from_secs(10));
    assert_eq!(cfg.egress.max_request_head, 8192);
    assert_eq!(cfg.ssh.user, "sshbridge");
    assert_eq!(
        cfg.ssh.identity,
        kit.path("id_ed25519"),
        "relative path taken from the config's dir"
    );
    assert_eq!(cfg.ssh.keepalive_interval, Duration::from_secs(5));
    assert_eq!(cfg.ssh.keepalive_max, 3);
    assert_eq!(cfg.ssh.backoff.initial, Duration::from_millis(500));
    assert_eq!(cfg.ssh.backoff.max, Duration::from_secs(30));
    assert_eq!(
        (cfg.ssh.backoff.multiplier, cfg.ssh.backoff.jitter),
        (2.0, 0.2)
    );
    assert_eq!(cfg.ssh.max_concurrent_handshakes, 64);
    assert_eq!(cfg.ssh.max_stream_buffer, 2 << 20);
    assert_eq!(cfg.ssh.sessions_per_node, 1);
    assert_eq!(cfg.health.interval, Duration::from_secs(10));
    assert_eq!(
        (cfg.health.kubelet_port, cfg.health.kubelet_path.as_str()),
        (10250, "/healthz")
    );
    assert_eq!(cfg.health.kubelet_ca, None);
    assert_eq!((cfg.health.down_after, cfg.health.up_after), (3, 2));
    assert_eq!(
        cfg.admin.listen,
        Listen::Unix("/run/sshbridge/admin.sock".into())
    );
    assert!(cfg.konnectivity.is_none());
    assert_eq!(
        cfg.migration.store,
        "file:/var/lib/sshbridge/migration.json"
    );
    assert_eq!(cfg.migration.batch_size, BatchSize::Percent(10.0));
    assert_eq!(cfg.migration.shadow_probes, 5);
    assert_eq!(cfg.migration.soak, Duration::from_secs(120));
    assert_eq!(
        cfg.nodes[0].ssh_address.to_string(),
        "10.0.0.5:2222",
        "ssh_address = address:[ssh].port"
    );
    assert_eq!(cfg.nodes[1].ssh_address.to_string(), "[fd00::6]:2222");
    assert_eq!(cfg.nodes[0].route, Route::Ssh);
    assert_eq!(cfg.source, kit.path("minimal.toml"));
}

#[test]
fn uds_frontend_is_not_defaulted_when_another_frontend_is_set() {
    let kit = Kit::new();
    let text = format!("[egress]\ngrpc_uds = \"k.sock\"\n{MINIMAL}");
    let cfg = kit
        .load("grpc.toml", &text)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.egress.http_connect_uds, None);
    assert_eq!(cfg.egress.grpc_uds, Some(kit.path("k.sock")));
}

#[test]
fn errors_read_as_file_line_col_message_hint_one_per_line() {
    let kit = Kit::new();
    let text = MINIMAL.replace("port = 2222", "port = 0\nconnect_timeout = \"soon\"");
    let err = kit.load("bad.toml", &text).unwrap_err();
    let file = kit.path("bad.toml").display().to_string();
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert_eq!(
        lines[0],
        format!("{file}:5:8: ssh.port: port 0 is out of range (hint: ports are 1..=65535)")
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}:6:19: ssh.connect_timeout: invalid duration \"soon\""
        )),
        "{shown}"
    );
}

#[test]
fn unreadable_file_names_the_path() {
    let kit = Kit::new();
    let missing = kit.path("nope.toml");
    let err = sshbridge_config::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(err.diagnostics().is_empty());
}
