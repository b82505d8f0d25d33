//! SSH user certificates against real OpenSSH sshd nodes that trust a CA
//! (`TrustedUserCAKeys` + `AuthorizedPrincipalsFile`, no authorized_keys).

use std::path::PathBuf;
use std::time::Duration;

use sshbridge_tests::usercert::PRINCIPAL;
use sshbridge_tests::{ssh_last_error, Bridge, BridgeConfig, Cluster};

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
