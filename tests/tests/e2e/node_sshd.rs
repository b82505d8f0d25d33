//! Real sshd configured only from `sshbridge manifests node-sshd`: the
//! bridge still reaches the kubelet, and a shell (or exec), a pty, a
//! forward outside the permitted set and agent forwarding are refused.
//! Once with the `sshd_config` Match block, once with the authorized_keys
//! line.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use sshbridge_tests::node_sshd::{descendants, process_info, GeneratedSshd, Lab};
use sshbridge_tests::{kubelet_get, Bridge};
use tokio::net::TcpListener;

use crate::support::within;

#[tokio::test]
async fn the_generated_match_block_carries_the_bridge_and_nothing_else() -> anyhow::Result<()> {
    within(60, restricted_node("sshd-config")).await
}

#[tokio::test]
async fn the_generated_authorized_keys_line_carries_the_bridge_and_nothing_else(
) -> anyhow::Result<()> {
    within(60, restricted_node("authorized-keys")).await
}

async fn restricted_node(form: &'static str) -> anyhow::Result<()> {
    let lab = Lab::new(&["node-0"], &[]).await?;
    lab.write_known_hosts(&[])?;
    let config = lab.bridge_config()?;
    let path = config.write()?;
    let node = &lab.nodes[0];
    let text = lab
        .generate(&path, &["--node", "node-0", "--form", form])
        .await?;
    let (generated, keys) = match form {
        "sshd-config" => {
            assert!(text.contains("\nMatch User "), "{text}");
            (text.clone(), vec![lab.client_key.public.clone()])
        }
        _ => {
            assert!(
                text.contains("\nrestrict,port-forwarding,permitopen="),
                "{text}"
            );
            // The generated lines as they are, comments included.
            (String::new(), vec![text.clone()])
        }
    };
    let sshd = GeneratedSshd::start(
        &lab.dir.path().join("sshd"),
        node.ssh_addr,
        &generated,
        &keys,
    )
    .await?;
    lab.write_known_hosts(&[(sshd.addr, sshd.host_key.clone())])?;
    let kubelet = node.kubelet.local_addr().to_string();
    let bridge = Bridge::start(config, Some(&kubelet)).await?;

    // The bridge works: a kubelet request through CONNECT.
    let c = bridge.egress().connect(&kubelet).await?;
    assert_eq!(c.status, 200, "{c:?}\n{}", sshd.log());
    let (status, body) = kubelet_get(
        c.stream,
        lab.pki.client_config(None)?,
        node.address,
        "/pods",
    )
    .await?;
    assert_eq!(
        (status, body.as_str()),
        (200, "node=node-0 path=/pods\n"),
        "{form}"
    );

    // A forward to another port of the node is refused by sshd, and the
    // listener there never sees a connection.
    let other = TcpListener::bind((node.address, 0)).await?;
    let target = other.local_addr()?.to_string();
    let c = bridge.egress().connect(&target).await?;
    assert_ne!(
        c.status, 200,
        "{form}: {target} is outside PermitOpen: {c:?}"
    );
    assert!(
        c.body.contains("forbids TCP forwarding"),
        "{form}: the refusal must name sshd's prohibition: {c:?}"
    );
    // The refusal has already been answered, so a connection sshd made
    // would be queued by now.
    let accepted = tokio::time::timeout(Duration::from_millis(300), other.accept()).await;
    assert!(accepted.is_err(), "{form}: sshd connected to {target}");

    shell_pty_and_agent_are_refused(&lab, &sshd, form).await
}

/// `ssh -A node 'touch MARKER'` with a running agent: the forced command
/// runs instead (the marker never appears) without SSH_AUTH_SOCK in its
/// environment; `ssh -tt` is refused a pty.
async fn shell_pty_and_agent_are_refused(
    lab: &Lab,
    sshd: &GeneratedSshd,
    form: &str,
) -> anyhow::Result<()> {
    let dir = lab.dir.path();
    let agent_sock = dir.join("agent.sock");
    let mut agent = tokio::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&agent_sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting ssh-agent (openssh-client)")?;
    wait_for(|| agent_sock.exists(), "ssh-agent's socket").await?;
    let marker = dir.join("exec-ran");
    let command = format!("touch {}; echo ran", marker.display());
    let mut ssh = ssh_client(lab, sshd, &["-T", "-A"], &command)?
        .env("SSH_AUTH_SOCK", &agent_sock)
        .stdin(Stdio::piped())
        .spawn()
        .context("starting ssh (openssh-client)")?;
    let sshd_pid = sshd.pid() as i32;
    let forced = || {
        descendants(sshd_pid)
            .into_iter()
            .filter_map(process_info)
            .find(|(cmd, _)| cmd.starts_with("/bin/cat"))
    };
    if let Err(e) = wait_for(|| forced().is_some(), "the forced command").await {
        ssh.start_kill()?;
        let out = ssh.wait_with_output().await?;
        anyhow::bail!(
            "{form}: {e}; ssh said: {}\nsshd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            sshbridge_tests::last_lines(&sshd.log(), 40)
        );
    }
    let (_, env) = forced().context("the forced command ended")?;
    assert!(
        !marker.exists(),
        "{form}: the client's command ran instead of the forced one"
    );
    assert!(
        !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")),
        "{form}: sshd forwarded the agent: {env:?}"
    );
    // The client hangs up: the forced command ends with the session.
    drop(ssh.stdin.take());
    let out = tokio::time::timeout(Duration::from_secs(10), ssh.wait_with_output())
        .await
        .context("ssh did not end after its input closed")??;
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("ran"),
        "{form}: {out:?}"
    );
    wait_for(|| forced().is_none(), "the forced command's exit").await?;
    assert!(!marker.exists(), "{form}: the client's command ran");
    agent.start_kill()?;
    let _ = agent.wait().await;

    // A pty is refused.
    let pty = ssh_client(lab, sshd, &["-tt"], "true")?
        .stdin(Stdio::null())
        .spawn()
        .context("starting ssh")?;
    let out = tokio::time::timeout(Duration::from_secs(10), pty.wait_with_output())
        .await
        .context("ssh -tt did not end")??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PTY allocation request failed"),
        "{form}: sshd must refuse the pty: {stderr}"
    );
    Ok(())
}

/// The real `ssh` client towards `sshd` with the bridge's key (or the
/// `-i` in `options`) and strict host key checking against the lab's
/// known_hosts.
pub(crate) fn ssh_client(
    lab: &Lab,
    sshd: &GeneratedSshd,
    options: &[&str],
    command: &str,
) -> anyhow::Result<tokio::process::Command> {
    let user = sshbridge_tests::cluster::current_user()?;
    let mut c = tokio::process::Command::new("ssh");
    c.args(["-F", "/dev/null"])
        .args(options)
        .arg("-p")
        .arg(sshd.addr.port().to_string())
        .arg("-i")
        .arg(&lab.client_key.private)
        .args(["-o", "IdentitiesOnly=yes"])
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            lab.known_hosts().display()
        ))
        .arg(format!("{user}@{}", sshd.addr.ip()))
        .arg(command)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Ok(c)
}

/// Polls `ready` every 20 ms for at most 10 s.
pub(crate) async fn wait_for(ready: impl Fn() -> bool, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ready() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what} did not appear within 10s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
