//! The certificate-mode block of `manifests node-sshd` on a real sshd: a
//! user certificate from the CA for the listed principal logs in (and gets
//! only the forced command); the plain key, a certificate for another
//! principal and one from another CA are refused.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use sshbridge_tests::hostkeys::{self, ClientKey};
use sshbridge_tests::node_sshd::{descendants, process_info, GeneratedSshd, Lab};

use crate::node_sshd::{ssh_client, wait_for};
use crate::support::within;

/// Signs `key`'s public half with `ca` for `principal`, valid 5 minutes.
fn certify(ca: &Path, key: &ClientKey, principal: &str) -> anyhow::Result<()> {
    let public = key.private.with_extension("pub");
    hostkeys::ssh_keygen(&[
        "-q",
        "-s",
        ca.to_str().context("path")?,
        "-I",
        "sshbridge-e2e",
        "-n",
        principal,
        "-V",
        "+5m",
        public.to_str().context("path")?,
    ])
}

#[tokio::test]
async fn the_certificate_block_takes_certificates_of_its_ca_and_principal_only(
) -> anyhow::Result<()> {
    within(60, async {
        let lab = Lab::new(&["node-0"], &[]).await?;
        lab.write_known_hosts(&[])?;
        let path = lab.bridge_config()?.write()?;
        let dir = lab.dir.path();
        let ca = dir.join("user_ca");
        hostkeys::generate_ed25519(&ca, "user-ca")?;
        let other_ca = dir.join("other_ca");
        hostkeys::generate_ed25519(&other_ca, "other-ca")?;
        let principals = dir.join("principals");
        std::fs::write(&principals, "bridge-cp-1\n")?;
        let ca_pub = ca.with_extension("pub").display().to_string();
        let principals_arg = principals.display().to_string();
        let text = lab
            .generate(
                &path,
                &[
                    "--node",
                    "node-0",
                    "--user-ca",
                    &ca_pub,
                    "--principal",
                    "bridge-cp-1",
                    "--principals-file",
                    &principals_arg,
                ],
            )
            .await?;
        assert!(
            text.contains(&format!("    TrustedUserCAKeys {ca_pub}\n")),
            "{text}"
        );
        // The plain key is listed, but AuthorizedKeysFile none ignores it.
        let sshd = GeneratedSshd::start(
            &dir.join("sshd"),
            lab.nodes[0].ssh_addr,
            &text,
            std::slice::from_ref(&lab.client_key.public),
        )
        .await?;
        lab.write_known_hosts(&[(sshd.addr, sshd.host_key.clone())])?;

        let good = ClientKey::generate(dir, "certified")?;
        certify(&ca, &good, "bridge-cp-1")?;
        let wrong_principal = ClientKey::generate(dir, "wrong-principal")?;
        certify(&ca, &wrong_principal, "someone-else")?;
        let wrong_ca = ClientKey::generate(dir, "wrong-ca")?;
        certify(&other_ca, &wrong_ca, "bridge-cp-1")?;

        // The certificate logs in and gets the forced command.
        let id = good.private.display().to_string();
        let mut ssh = ssh_client(&lab, &sshd, &["-T", "-i", &id], "id")?
            .stdin(Stdio::piped())
            .spawn()?;
        let pid = sshd.pid() as i32;
        let forced = || {
            descendants(pid)
                .into_iter()
                .filter_map(process_info)
                .any(|(cmd, _)| cmd.starts_with("/bin/cat"))
        };
        wait_for(forced, "the certificate login's forced command").await?;
        drop(ssh.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(10), ssh.wait()).await;
        assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());

        // The plain key (no certificate) and the two bad certificates are refused.
        for (what, key) in [
            ("plain key", None),
            ("certificate for another principal", Some(&wrong_principal)),
            ("certificate from another CA", Some(&wrong_ca)),
        ] {
            let id = key.map(|k| k.private.display().to_string());
            let mut options = vec!["-T"];
            if let Some(id) = &id {
                options.extend(["-i", id.as_str()]);
            }
            let out = ssh_client(&lab, &sshd, &options, "id")?
                .stdin(Stdio::null())
                .output();
            let out = tokio::time::timeout(Duration::from_secs(10), out)
                .await
                .context("ssh did not end")??;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(255), "{what}: {stderr}");
            assert!(stderr.contains("Permission denied"), "{what}: {stderr}");
        }
        Ok(())
    })
    .await
}
