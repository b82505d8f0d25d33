//! Self-tests of the kit, checked with OpenSSH's own client so that the
//! bridge tests stand on known-good nodes and known_hosts files.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sshbridge_tests::{Cluster, KnownHostsStyle, Node};
use tokio::io::AsyncWriteExt;

use crate::support::within;

/// `ssh -W target` through `node` with `known_hosts`; returns (success,
/// stdout, stderr) after sending `input`.
async fn ssh_w(
    cluster: &Cluster,
    node: &Node,
    known_hosts: &Path,
    target: SocketAddr,
    input: &[u8],
) -> anyhow::Result<(bool, Vec<u8>, String)> {
    let ssh = node.sshd.addr();
    let mut child = tokio::process::Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(&cluster.client_key.private)
        .args(["-p", &ssh.port().to_string(), "-W", &target.to_string()])
        .arg(format!(
            "{}@{}",
            sshbridge_tests::cluster::current_user()?,
            ssh.ip()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    // Feed stdin while stdout is drained, or large inputs deadlock.
    tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await??;
    Ok((
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn kit_sshd_forwards_only_to_its_own_addresses() -> anyhow::Result<()> {
    within(60, async {
        let cluster = Cluster::builder().nodes(2).build().await?;
        let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
        let kh = cluster.write_known_hosts("kh", &[a, b], KnownHostsStyle::Plain)?;
        let (ok, out, err) = ssh_w(&cluster, a, &kh, a.echo.addr(), b"hello\n").await?;
        assert!(
            ok,
            "ssh -W to its own pod failed: {err}\nsshd log:\n{}",
            a.sshd.log()
        );
        assert_eq!(out, b"hello\n");
        let (ok, _, err) = ssh_w(&cluster, a, &kh, b.echo.addr(), b"hello\n").await?;
        assert!(!ok, "node-0's sshd must refuse a dial to node-1's pod");
        assert!(err.contains("prohibited"), "unexpected refusal: {err}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn kit_openssh_carries_a_large_echo_intact() -> anyhow::Result<()> {
    // The control for the bridge's stream tests: the same nodes and pod
    // servers, driven by OpenSSH's client, keep every byte.
    within(60, async {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let n = &cluster.nodes[0];
        let kh = cluster.write_known_hosts("kh", &[n], KnownHostsStyle::Plain)?;
        let mut data = vec![0u8; 8 * 1024 * 1024];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut data);
        let (ok, out, err) = ssh_w(&cluster, n, &kh, n.echo.addr(), &data).await?;
        assert!(ok, "ssh -W failed: {err}");
        assert_eq!(out.len(), data.len(), "OpenSSH lost bytes: {err}");
        assert!(out == data, "OpenSSH changed bytes");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn kit_known_hosts_variants_are_accepted_by_openssh() -> anyhow::Result<()> {
    within(90, async {
        let plain = Cluster::builder().nodes(1).build().await?;
        let n = &plain.nodes[0];
        for (file, style) in [
            ("plain", KnownHostsStyle::Plain),
            ("hashed", KnownHostsStyle::Hashed),
        ] {
            let kh = plain.write_known_hosts(file, &[n], style)?;
            let (ok, out, err) = ssh_w(&plain, n, &kh, n.echo.addr(), b"x").await?;
            assert!(ok && out == b"x", "{file} known_hosts refused: {err}");
        }
        let empty = plain.write_known_hosts("empty", &[], KnownHostsStyle::Plain)?;
        let (ok, _, _) = ssh_w(&plain, n, &empty, n.echo.addr(), b"x").await?;
        assert!(!ok, "an unknown host must be refused by a strict client");

        let ca = Cluster::builder().nodes(1).host_ca().build().await?;
        let n = &ca.nodes[0];
        let kh = ca.write_known_hosts("ca", &[n], KnownHostsStyle::CertAuthority)?;
        let (ok, out, err) = ssh_w(&ca, n, &kh, n.echo.addr(), b"y").await?;
        assert!(
            ok && out == b"y",
            "@cert-authority known_hosts refused: {err}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn kit_sshd_kill_and_restart_keep_the_address() -> anyhow::Result<()> {
    within(60, async {
        let mut cluster = Cluster::builder().nodes(1).build().await?;
        let addr = cluster.nodes[0].sshd.addr();
        cluster.nodes[0].sshd.kill();
        let refused =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await?;
        assert!(
            refused.is_err(),
            "a killed sshd must not accept connections"
        );
        cluster.nodes[0].sshd.restart().await?;
        assert_eq!(cluster.nodes[0].sshd.addr(), addr);
        let n = &cluster.nodes[0];
        let kh = cluster.write_known_hosts("kh", &[n], KnownHostsStyle::Plain)?;
        let (ok, out, err) = ssh_w(&cluster, n, &kh, n.echo.addr(), b"back").await?;
        assert!(
            ok && out == b"back",
            "restarted sshd does not forward: {err}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn kit_bridge_config_is_accepted_by_the_config_loader() -> anyhow::Result<()> {
    within(60, async {
        let cluster = Cluster::builder().nodes(2).build().await?;
        let config = cluster.with_tcp_egress(cluster.bridge_config()?)?;
        let path = config.write()?;
        let loaded = sshbridge_config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(loaded.nodes.len(), 2);
        assert_eq!(loaded.nodes[1].name, "node-1");
        assert_eq!(loaded.nodes[1].address, cluster.nodes[1].address);
        assert_eq!(loaded.ssh.max_stream_buffer, 4 * 1024 * 1024);
        assert_eq!(loaded.health.kubelet_port, cluster.kubelet_port);
        let mut bad = config.clone();
        bad.extra_bridge_lines.push("bogus_key = 1".into());
        bad.write()?;
        let err = sshbridge_config::load(&path).expect_err("an unknown key must be rejected");
        assert!(
            err.to_string().contains("bogus_key"),
            "error does not name the key: {err}"
        );
        Ok(())
    })
    .await
}
