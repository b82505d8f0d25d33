//! Tunnel behaviour that needs no sshd: failures are classified, dials
//! fail fast with the reason, drain and drop stop the actor. Dialing
//! through a real sshd is covered by the tests crate.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::*;
use crate::SshSetupError;
use sshbridge_core::tasks::Tasks;

const T: Duration = Duration::from_secs(10);

fn ssh_cfg(dir: &Path) -> sshbridge_config::Ssh {
    sshbridge_config::Ssh {
        user: "sshbridge".into(),
        identity: dir.join("id"),
        certificate: None,
        certificate_warn_before: Duration::from_secs(7 * 24 * 3600),
        known_hosts: dir.join("known_hosts"),
        port: 22,
        connect_timeout: Duration::from_secs(3),
        keepalive_interval: Duration::from_secs(5),
        keepalive_max: 3,
        backoff: sshbridge_config::Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        },
        max_concurrent_handshakes: 4,
        max_stream_buffer: 1 << 20,
        max_stream_chunks: 1024,
        sessions_per_node: 1,
        threads: 0,
    }
}

fn context(dir: &Path) -> Arc<SshContext> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(dir.join("id"))
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "{out:?}");
    std::fs::write(dir.join("known_hosts"), "").expect("write known_hosts");
    SshContext::load(&ssh_cfg(dir)).expect("load context")
}

fn node(port: u16) -> Node {
    Node {
        name: "node-a".into(),
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ssh_address: HostPort {
            host: "127.0.0.1".into(),
            port,
        },
        pod_cidrs: vec![],
        route: sshbridge_config::Route::Ssh,
    }
}

async fn reach(rx: &mut watch::Receiver<TunnelState>, want: TunnelState) {
    tokio::time::timeout(T, rx.wait_for(|s| *s == want))
        .await
        .unwrap_or_else(|_| panic!("state {want:?} not reached"))
        .expect("actor alive");
}

#[tokio::test]
async fn refused_sshd_makes_dials_fail_fast_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context(dir.path());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let tunnel = Tunnel::spawn(node(port), ctx, CancellationToken::new(), &Tasks::new());
    let mut rx = tunnel.subscribe();
    reach(&mut rx, TunnelState::Backoff).await;
    let stats = tunnel.stats();
    assert_eq!(stats.handshake_failures.refused, 1, "{stats:?}");
    assert_eq!(stats.up_since, None);
    let err = match tokio::time::timeout(T, tunnel.dial("10.0.0.5", 10250)).await {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("dial succeeded without a session"),
        Err(_) => panic!("dial did not fail fast"),
    };
    assert_eq!(err.http_status(), 503);
    let msg = err.to_string();
    assert!(
        msg.contains("node-a")
            && msg.contains(&format!("127.0.0.1:{port}"))
            && msg.contains("check that sshd runs"),
        "{msg}"
    );
    drop(tunnel);
    reach(&mut rx, TunnelState::Stopped).await;
}

#[tokio::test]
async fn silent_sshd_is_a_timeout_after_connect_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context(dir.path());
    // Accepts TCP (kernel backlog) but never speaks SSH.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    tokio::time::pause();
    let start = tokio::time::Instant::now();
    let tunnel = Tunnel::spawn(node(port), ctx, CancellationToken::new(), &Tasks::new());
    let mut rx = tunnel.subscribe();
    reach(&mut rx, TunnelState::Backoff).await;
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let stats = tunnel.stats();
    assert_eq!(stats.handshake_failures.timeout, 1, "{stats:?}");
    assert!(stats
        .last_error
        .unwrap_or_default()
        .contains("ssh.connect_timeout"));
}

#[tokio::test]
async fn drain_refuses_new_dials_and_stops_the_actor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context(dir.path());
    let shutdown = CancellationToken::new();
    let tunnel = Tunnel::spawn(node(9), ctx, shutdown.clone(), &Tasks::new());
    let mut rx = tunnel.subscribe();
    tokio::time::timeout(T, tunnel.drain())
        .await
        .expect("drain with no streams ends");
    reach(&mut rx, TunnelState::Stopped).await;
    let err = match tunnel.dial("10.0.0.5", 10250).await {
        Err(e) => e,
        Ok(_) => panic!("dial after drain"),
    };
    assert!(err.to_string().contains("draining"), "{err}");
}

#[tokio::test]
async fn shutdown_token_stops_the_actor_and_its_task_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = context(dir.path());
    let shutdown = CancellationToken::new();
    let tasks = Tasks::new();
    let tunnel = Tunnel::spawn(node(9), ctx, shutdown.clone(), &tasks);
    let mut rx = tunnel.subscribe();
    assert_eq!(
        tasks.running().get("ssh session node-a"),
        Some(&1),
        "{:?}",
        tasks.running()
    );
    shutdown.cancel();
    reach(&mut rx, TunnelState::Stopped).await;
    let left = tasks.close_and_wait(T).await;
    assert!(left.is_empty(), "still running after shutdown: {left:?}");
}

#[test]
fn context_errors_name_the_file_and_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = SshContext::load(&ssh_cfg(dir.path())).unwrap_err();
    assert!(matches!(err, SshSetupError::Identity { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.path().join("id").display().to_string())
            && msg.contains("[ssh].identity"),
        "{msg}"
    );
    context(dir.path());
    std::fs::write(dir.path().join("known_hosts"), "host ssh-ed25519\n").expect("write");
    let err = SshContext::load(&ssh_cfg(dir.path())).unwrap_err();
    assert!(err.to_string().contains("known_hosts:1:"), "{err}");
}
