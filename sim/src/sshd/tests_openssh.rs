//! The simulated sshd against the real OpenSSH client (`/usr/bin/ssh`), with
//! a known_hosts file and identity written by `sim::keys`: proves the key
//! formats and the server interoperate with what operators actually run.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::time::timeout;

use super::tests::{echo_server, start_sim, T};
use crate::keys::{generate_ed25519, known_hosts_line, write_private_key};

const SSH: &str = "/usr/bin/ssh";

/// `ssh -W target` through the simulated node at `port`, strict host key
/// checking against `known_hosts`, identity `identity` only.
fn ssh_w(port: u16, target: &str, known_hosts: &Path, identity: &Path) -> Command {
    assert!(
        Path::new(SSH).exists(),
        "{SSH} is missing: install openssh-client to run this interoperability test"
    );
    let mut cmd = Command::new(SSH);
    cmd.arg("-F")
        .arg("/dev/null")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "UpdateHostKeys=no",
        ])
        .args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"])
        .args(["-o", "ConnectTimeout=5"])
        .arg("-i")
        .arg(identity)
        .arg("-p")
        .arg(port.to_string())
        .arg("-W")
        .arg(target)
        .arg("sshbridge@127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn openssh_client_relays_through_the_simulated_node() {
    let echo = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let key = generate_ed25519();
    let identity = dir.path().join("id_ed25519");
    write_private_key(&identity, &key).unwrap();
    let (sshd, host_key) = start_sim(&key, "127.0.0.0/8").await;
    let port = sshd.local_addr().port();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        known_hosts_line("127.0.0.1", port, &host_key) + "\n",
    )
    .unwrap();

    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let mut child = ssh_w(port, &echo.addr.to_string(), &known_hosts, &identity)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let to_send = payload.clone();
    // Closing stdin makes ssh send EOF; the echo server's EOF must come back
    // for ssh to exit, so this also proves half-close through the relay.
    let writer = tokio::spawn(async move {
        stdin.write_all(&to_send).await.unwrap();
        drop(stdin);
    });
    let out = timeout(T, child.wait_with_output()).await.unwrap().unwrap();
    timeout(T, writer).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ssh failed: {stderr}");
    assert_eq!(out.stdout.len(), payload.len(), "ssh stderr: {stderr}");
    assert!(out.stdout == payload, "bytes through ssh -W differ");
    assert_eq!(sshd.stats().channels_opened, 1);
}

#[tokio::test]
async fn openssh_client_sees_why_a_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_ed25519();
    let identity = dir.path().join("id_ed25519");
    write_private_key(&identity, &key).unwrap();
    let (sshd, host_key) = start_sim(&key, "127.0.0.2/32").await;
    let port = sshd.local_addr().port();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        known_hosts_line("127.0.0.1", port, &host_key) + "\n",
    )
    .unwrap();

    let out = timeout(
        T,
        ssh_w(port, "127.0.0.1:9", &known_hosts, &identity).output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("administratively prohibited") && stderr.contains("sim-node"),
        "ssh stderr should carry the node's reason: {stderr}"
    );
}

#[tokio::test]
async fn openssh_client_refuses_a_host_key_not_in_known_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_ed25519();
    let identity = dir.path().join("id_ed25519");
    write_private_key(&identity, &key).unwrap();
    let (sshd, _host_key) = start_sim(&key, "127.0.0.0/8").await;
    let port = sshd.local_addr().port();
    let other = generate_ed25519();
    let known_hosts = dir.path().join("known_hosts");
    let line = known_hosts_line("127.0.0.1", port, other.public_key());
    std::fs::write(&known_hosts, line + "\n").unwrap();

    let out = timeout(
        T,
        ssh_w(port, "127.0.0.1:9", &known_hosts, &identity).output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("HOST IDENTIFICATION HAS CHANGED")
            || stderr.contains("verification failed"),
        "{stderr}"
    );
    assert_eq!(sshd.stats().channels_opened, 0);
}

#[tokio::test]
async fn openssh_keepalives_are_answered_on_an_idle_session() {
    let echo = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let key = generate_ed25519();
    let identity = dir.path().join("id_ed25519");
    write_private_key(&identity, &key).unwrap();
    let (sshd, host_key) = start_sim(&key, "127.0.0.0/8").await;
    let port = sshd.local_addr().port();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        known_hosts_line("127.0.0.1", port, &host_key) + "\n",
    )
    .unwrap();

    // With one unanswered keepalive allowed per second, ssh gives up after
    // about two idle seconds unless the server answers each keepalive.
    let mut cmd = ssh_w(port, &echo.addr.to_string(), &known_hosts, &identity);
    cmd.args(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=1"]);
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Real time must pass here: the keepalives run in the ssh process.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    timeout(T, stdin.write_all(b"still here"))
        .await
        .unwrap()
        .unwrap();
    drop(stdin);
    let out = timeout(T, child.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ssh failed: {stderr}");
    assert_eq!(out.stdout, b"still here", "ssh stderr: {stderr}");
}
