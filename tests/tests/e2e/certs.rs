//! SSH user certificates against real OpenSSH sshd nodes that trust a CA
//! (`TrustedUserCAKeys` + `AuthorizedPrincipalsFile`, no authorized_keys).

use std::path::PathBuf;
use std::time::Duration;

use sshbridge_tests::usercert::PRINCIPAL;
use sshbridge_tests::{metric, ssh_last_error, Bridge, BridgeConfig, Cluster};

use crate::support::{echo_round_trip, within};

/// Signs the cluster's bridge identity with user CA `ca` and points
/// `config` at the certificate.
fn certify(
    cluster: &Cluster,
    config: &mut BridgeConfig,
    ca: usize,
    principals: &[&str],
    validity: &str,
    name: &str,
) -> anyhow::Result<PathBuf> {
    let out = cluster.dir.path().join(name);
    let cert = cluster.user_cas[ca].sign(
        &cluster.client_key.private,
        &format!("bridge-{name}"),
        principals,
        validity,
        &out,
    )?;
    config.extra_ssh_lines = vec![format!("certificate = {:?}", cert.display().to_string())];
    Ok(cert)
}

#[tokio::test]
async fn certificate_login_carries_streams_through_the_bridge() -> anyhow::Result<()> {
    within(60, async {
        let cluster = Cluster::builder().nodes(1).user_cas(1).build().await?;
        let node = &cluster.nodes[0];
        let mut config = cluster.bridge_config()?;
        certify(&cluster, &mut config, 0, &[PRINCIPAL], "-1m:+1h", "cert-a")?;
        let bridge = Bridge::start(config, Some(&node.kubelet_target())).await?;
        let mut c = bridge
            .egress()
            .connect(&node.echo.addr().to_string())
            .await?;
        assert_eq!(c.status, 200, "{c:?}");
        echo_round_trip(&mut c.stream, b"over a certificate login").await?;
        let log = node.sshd.log();
        assert!(
            log.contains("Accepted publickey") && log.contains("ED25519-CERT"),
            "sshd must have accepted the certificate:\n{log}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_or_for_other_principals_is_refused_by_name(
) -> anyhow::Result<()> {
    within(60, async {
        // node-0 trusts only CA 0, node-1 trusts CA 0 and CA 1.
        let cluster = Cluster::builder()
            .nodes(2)
            .user_cas(2)
            .first_user_ca_only(0)
            .build()
            .await?;
        let (old_only, both) = (&cluster.nodes[0], &cluster.nodes[1]);
        let mut config = cluster.bridge_config()?;
        let cert = certify(
            &cluster,
            &mut config,
            1,
            &[PRINCIPAL],
            "-1m:+1h",
            "cert-ca1",
        )?;
        let bridge = Bridge::start(config.clone(), Some(&both.kubelet_target())).await?;
        let report = bridge
            .wait_for_report("node-0 refusing CA 1", Duration::from_secs(20), |r| {
                ssh_last_error(r, &old_only.name).contains("refused certificate")
            })
            .await?;
        let err = ssh_last_error(&report, &old_only.name);
        for want in [
            old_only.name.as_str(),
            &old_only.sshd.addr().to_string(),
            &cert.display().to_string(),
            "TrustedUserCAKeys",
            PRINCIPAL,
        ] {
            assert!(err.contains(want), "the refusal must name {want:?}: {err}");
        }
        let c = bridge.egress().connect(&old_only.kubelet_target()).await?;
        assert_eq!(c.status, 503, "{c:?}");
        drop(bridge);

        // Principals the nodes do not list: refused everywhere, by name.
        let cert = certify(
            &cluster,
            &mut config,
            0,
            &["someone-else"],
            "-1m:+1h",
            "cert-p",
        )?;
        let bridge = Bridge::start(config, None).await?;
        let report = bridge
            .wait_for_report("both nodes refusing", Duration::from_secs(20), |r| {
                cluster
                    .nodes
                    .iter()
                    .all(|n| ssh_last_error(r, &n.name).contains("refused certificate"))
            })
            .await?;
        for n in &cluster.nodes {
            let err = ssh_last_error(&report, &n.name);
            for want in [
                n.name.as_str(),
                &cert.display().to_string(),
                "[someone-else]",
                "AuthorizedPrincipalsFile",
            ] {
                assert!(err.contains(want), "the refusal must name {want:?}: {err}");
            }
        }
        assert!(
            !bridge.log().contains("PRIVATE KEY"),
            "no key material in the log"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_short_lived_certificate_warns_and_a_renewed_file_is_picked_up() -> anyhow::Result<()> {
    within(60, async {
        let cluster = Cluster::builder().nodes(1).user_cas(1).build().await?;
        let node = &cluster.nodes[0];
        let mut config = cluster.bridge_config()?;
        let cert = certify(&cluster, &mut config, 0, &[PRINCIPAL], "-1m:+10m", "short")?;
        config
            .extra_ssh_lines
            .push("certificate_warn_before = \"1h\"".into());
        let bridge = Bridge::start(config, Some(&node.kubelet_target())).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        let labels = [("key_id", "bridge-short"), ("serial", "0")];
        let body = bridge.metrics().await?;
        let expiry = metric(&body, "sshbridge_ssh_certificate_expiry_seconds", &labels)
            .ok_or_else(|| anyhow::anyhow!("no expiry series:\n{body}"))?;
        assert!(
            (now + 500.0..=now + 660.0).contains(&expiry),
            "expiry {expiry} is not about 10 minutes after {now}"
        );
        assert_eq!(
            metric(&body, "sshbridge_ssh_certificate_expiring", &labels),
            Some(1.0)
        );
        assert!(!body.contains(&cert.display().to_string()), "no path label");
        // Ready once the node's probe passed: a warning is not unreadiness.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let ready = loop {
            let ready = bridge.admin_get("/readyz?verbose").await?;
            if ready.status == 200 || tokio::time::Instant::now() > deadline {
                break ready;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(ready.status, 200, "{}", ready.body);
        for want in ["ssh-certificate", "bridge-short", "left, less than", "1h"] {
            assert!(
                ready.body.contains(want),
                "/readyz?verbose lacks {want:?}: {}",
                ready.body
            );
        }
        assert!(bridge.log().contains("ssh certificate expires soon"));
        // The report names the certificate, its expiry and the warning.
        let report = bridge.report().await?;
        let shown = report
            .ssh_certificate
            .ok_or_else(|| anyhow::anyhow!("/report has no ssh_certificate"))?;
        assert_eq!(
            (shown.key_id.as_str(), shown.serial, shown.expiring),
            ("bridge-short", 0, true)
        );
        assert!(
            (500..=660).contains(&shown.seconds_left),
            "{} s left is not about 10 minutes",
            shown.seconds_left
        );

        // A renewed certificate in the same file: picked up without SIGHUP.
        let renewed = cluster.dir.path().join("renewed");
        cluster.user_cas[0].sign(
            &cluster.client_key.private,
            "bridge-renewed",
            &[PRINCIPAL],
            "-1m:+30d",
            &renewed,
        )?;
        std::fs::copy(&renewed, &cert)?;
        let renewed_labels = [("key_id", "bridge-renewed"), ("serial", "0")];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let body = bridge.metrics().await?;
            if metric(&body, "sshbridge_ssh_certificate_expiring", &renewed_labels) == Some(0.0) {
                assert!(
                    !body.contains("bridge-short"),
                    "the old certificate's series stays:\n{body}"
                );
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the renewed certificate was not picked up:\n{body}\n{}",
                bridge.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Live sessions roll over to it and keep serving.
        bridge
            .wait_for_log(
                "ssh session rolled over to the new credential",
                Duration::from_secs(20),
            )
            .await?;
        let mut c = bridge
            .egress()
            .connect(&node.echo.addr().to_string())
            .await?;
        assert_eq!(c.status, 200, "{c:?}");
        echo_round_trip(&mut c.stream, b"renewed").await?;
        Ok(())
    })
    .await
}
