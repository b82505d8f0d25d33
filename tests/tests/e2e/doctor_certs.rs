//! `sshbridge doctor` with `[ssh] certificate`, against real sshd nodes
//! configured from the generated certificate-mode block: a node that
//! trusts the bridge's CA (ok, key id and expiry named), a node that
//! trusts another CA (unknown CA, by name), an expired certificate (every
//! node: expired, with its validity window; exit 1), and one about to
//! expire (warn, exit 3).

use std::path::{Path, PathBuf};

use anyhow::Context;
use sshbridge_tests::hostkeys;
use sshbridge_tests::node_sshd::{GeneratedSshd, Lab};
use sshbridge_tests::sshbridge_cli;

use super::doctor::check;
use crate::support::within;

/// The bridge config at `path` with `[ssh] certificate` (and more `[ssh]`
/// lines) added, written next to it as `name`.
fn with_certificate(path: &Path, name: &str, lines: &str) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(path)?;
    anyhow::ensure!(text.contains("\n[ssh]\n"), "no [ssh] in {text}");
    let out = path.with_file_name(name);
    std::fs::write(
        &out,
        text.replacen("\n[ssh]\n", &format!("\n[ssh]\n{lines}"), 1),
    )?;
    Ok(out)
}

/// Signs the bridge key's public half with `ca` for `validity`, into
/// `dir/name` (`ssh-keygen` writes KEY-cert.pub; it is moved there).
fn certify(
    ca: &Path,
    key: &Path,
    validity: &str,
    dir: &Path,
    name: &str,
) -> anyhow::Result<PathBuf> {
    let public = key.with_extension("pub");
    hostkeys::ssh_keygen(&[
        "-q",
        "-s",
        ca.to_str().context("path")?,
        "-I",
        "bridge-cp-1-key",
        "-n",
        "bridge-cp-1",
        "-V",
        validity,
        public.to_str().context("path")?,
    ])?;
    let written = PathBuf::from(format!("{}-cert.pub", key.display()));
    let out = dir.join(name);
    std::fs::rename(&written, &out)?;
    Ok(out)
}

#[tokio::test]
async fn doctor_names_an_unknown_ca_an_expired_and_an_expiring_certificate() -> anyhow::Result<()> {
    within(60, async {
        let lab = Lab::new(&["trusts-ca", "unknown-ca"], &[]).await?;
        lab.write_known_hosts(&[])?;
        let path = lab.bridge_config()?.write()?;
        let dir = lab.dir.path();
        let (ca, other_ca) = (dir.join("user_ca"), dir.join("other_ca"));
        hostkeys::generate_ed25519(&ca, "user-ca")?;
        hostkeys::generate_ed25519(&other_ca, "other-ca")?;
        let principals = dir.join("principals");
        std::fs::write(&principals, "bridge-cp-1\n")?;
        let principals_arg = principals.display().to_string();
        let mut known = Vec::new();
        let mut sshds = Vec::new();
        for (name, trusted) in [("trusts-ca", &ca), ("unknown-ca", &other_ca)] {
            let trusted = trusted.with_extension("pub").display().to_string();
            let text = lab
                .generate(
                    &path,
                    &[
                        "--node",
                        name,
                        "--user-ca",
                        &trusted,
                        "--principal",
                        "bridge-cp-1",
                        "--principals-file",
                        &principals_arg,
                    ],
                )
                .await?;
            let sshd =
                GeneratedSshd::start(&dir.join(name), lab.node(name).ssh_addr, &text, &[]).await?;
            known.push((sshd.addr, sshd.host_key.clone()));
            sshds.push(sshd);
        }
        lab.write_known_hosts(&known)?;
        let key = &lab.client_key.private;

        // A valid certificate: the node trusting its CA is ok, the other
        // one names the unknown CA.
        let cert = certify(&ca, key, "+30d", dir, "valid-cert.pub")?;
        let config = with_certificate(
            &path,
            "valid.toml",
            &format!("certificate = {:?}\n", cert.display().to_string()),
        )?;
        let config_arg = config.display().to_string();
        let out = sshbridge_cli(["doctor", "--config", &config_arg, "-o", "json"]).await?;
        assert_eq!(out.code, Some(1), "{out:?}");
        let doc: serde_json::Value = serde_json::from_str(&out.stdout)?;
        let (result, message) = check(&doc, "trusts-ca", "authentication");
        assert_eq!(result, "ok", "{message}");
        for want in [
            "key id \"bridge-cp-1-key\"",
            "principals [bridge-cp-1]",
            "valid until",
        ] {
            assert!(message.contains(want), "{want:?}: {message}");
        }
        assert_eq!(check(&doc, "trusts-ca", "kubelet tls").0, "ok");
        let (result, message) = check(&doc, "unknown-ca", "authentication");
        assert_eq!(result, "fail", "{message}");
        for want in [
            "unknown CA",
            "TrustedUserCAKeys",
            "principals [bridge-cp-1]",
        ] {
            assert!(message.contains(want), "{want:?}: {message}");
        }
        assert_eq!(check(&doc, "unknown-ca", "forward").0, "skip");
        let table = sshbridge_cli(["doctor", "--config", &config_arg]).await?;
        eprintln!("---- sshbridge doctor (certificate) ----\n{}", table.stdout);

        // An expired certificate: every node says so, with the window.
        let expired = certify(&ca, key, "20200101:20200102", dir, "expired-cert.pub")?;
        let config = with_certificate(
            &path,
            "expired.toml",
            &format!("certificate = {:?}\n", expired.display().to_string()),
        )?;
        let config_arg = config.display().to_string();
        let out = sshbridge_cli(["doctor", "--config", &config_arg, "-o", "json"]).await?;
        assert_eq!(out.code, Some(1), "{out:?}");
        let doc: serde_json::Value = serde_json::from_str(&out.stdout)?;
        for node in ["trusts-ca", "unknown-ca"] {
            assert_eq!(check(&doc, node, "host key").0, "ok", "{node}");
            let (result, message) = check(&doc, node, "authentication");
            assert_eq!(result, "fail", "{node}: {message}");
            for want in [
                "expired",
                &expired.display().to_string(),
                "2020-01-02",
                "issue a new one",
            ] {
                assert!(message.contains(want), "{node} {want:?}: {message}");
            }
        }
        let table = sshbridge_cli(["doctor", "--config", &config_arg]).await?;
        eprintln!(
            "---- sshbridge doctor (expired certificate) ----\n{}",
            table.stdout
        );

        // About to expire: a warning, exit 3.
        let soon = certify(&ca, key, "+10m", dir, "soon-cert.pub")?;
        let config = with_certificate(
            &path,
            "soon.toml",
            &format!(
                "certificate = {:?}\ncertificate_warn_before = \"1h\"\n",
                soon.display().to_string()
            ),
        )?;
        let config_arg = config.display().to_string();
        let out =
            sshbridge_cli(["doctor", "trusts-ca", "--config", &config_arg, "-o", "json"]).await?;
        assert_eq!(out.code, Some(3), "{out:?}");
        let doc: serde_json::Value = serde_json::from_str(&out.stdout)?;
        assert_eq!(doc["result"], "warn", "{doc}");
        let (result, message) = check(&doc, "trusts-ca", "authentication");
        assert_eq!(result, "warn", "{message}");
        assert!(message.contains("certificate_warn_before"), "{message}");
        drop(sshds);
        Ok(())
    })
    .await
}
