//! Credential rotation under traffic: changing `identity` + `certificate`
//! and reloading rolls every session over without failing a request; a
//! node that refuses the new credential keeps its old session.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sshbridge_tests::hostkeys::ClientKey;
use sshbridge_tests::usercert::PRINCIPAL;
use sshbridge_tests::{ssh_last_error, Bridge, Cluster, Egress};

use crate::support::{echo_round_trip, within};

/// CONNECT + one echo round trip to `target`, in a loop until `stop`;
/// counts successes and failures.
fn traffic(
    egress: Egress,
    target: String,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut errors = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let one = async {
                let mut c = egress.connect(&target).await?;
                anyhow::ensure!(c.status == 200, "status {}: {}", c.status, c.body);
                echo_round_trip(&mut c.stream, b"rotation").await
            };
            match tokio::time::timeout(Duration::from_secs(5), one).await {
                Ok(Ok(())) => ok.fetch_add(1, Ordering::SeqCst),
                Ok(Err(e)) => {
                    errors.push(format!("{e:#}"));
                    failed.fetch_add(1, Ordering::SeqCst)
                }
                Err(_) => {
                    errors.push("timed out".into());
                    failed.fetch_add(1, Ordering::SeqCst)
                }
            };
        }
        errors
    })
}

#[tokio::test]
async fn rotation_under_traffic_fails_no_request_and_a_refusing_node_keeps_its_session(
) -> anyhow::Result<()> {
    within(60, async {
        // node-0 trusts only the old CA; node-1 trusts both.
        let cluster = Cluster::builder()
            .nodes(2)
            .user_cas(2)
            .first_user_ca_only(0)
            .build()
            .await?;
        let (refusing, rolling) = (&cluster.nodes[0], &cluster.nodes[1]);
        let dir = cluster.dir.path();
        let mut config = cluster.bridge_config()?;
        let old_cert = cluster.user_cas[0].sign(
            &cluster.client_key.private,
            "bridge-old",
            &[PRINCIPAL],
            "-1m:+1h",
            &dir.join("old-cert.pub"),
        )?;
        config.extra_ssh_lines = vec![format!(
            "certificate = {:?}",
            old_cert.display().to_string()
        )];
        let mut bridge = Bridge::start(config.clone(), Some(&rolling.kubelet_target())).await?;
        bridge
            .wait_for_status(&refusing.kubelet_target(), 200, Duration::from_secs(20))
            .await?;

        // A stream open across the rotation, and traffic to both nodes.
        let mut held = bridge
            .egress()
            .connect(&rolling.echo.addr().to_string())
            .await?;
        assert_eq!(held.status, 200);
        echo_round_trip(&mut held.stream, b"before").await?;
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let loops: Vec<_> = [rolling, refusing]
            .iter()
            .map(|n| {
                traffic(
                    bridge.egress(),
                    n.echo.addr().to_string(),
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;

        // New identity, certificate from the new CA, SIGHUP.
        let new_key = ClientKey::generate(dir, "id_new")?;
        let new_cert = cluster.user_cas[1].sign(
            &new_key.private,
            "bridge-new",
            &[PRINCIPAL],
            "-1m:+1h",
            &dir.join("new-cert.pub"),
        )?;
        config.identity = new_key.private.clone();
        config.extra_ssh_lines = vec![format!(
            "certificate = {:?}",
            new_cert.display().to_string()
        )];
        bridge.rewrite_config(config)?;
        bridge.sighup()?;
        bridge
            .wait_for_log(
                "ssh session rolled over to the new credential",
                Duration::from_secs(20),
            )
            .await?;
        let report = bridge
            .wait_for_report(
                "node-0 refusing the rotation",
                Duration::from_secs(20),
                |r| ssh_last_error(r, &refusing.name).contains("kept the SSH session"),
            )
            .await?;
        let err = ssh_last_error(&report, &refusing.name);
        for want in [
            refusing.name.as_str(),
            &new_cert.display().to_string(),
            "bridge-new",
            "TrustedUserCAKeys",
        ] {
            assert!(err.contains(want), "the refusal must name {want:?}: {err}");
        }
        let log = bridge.log();
        assert!(
            log.contains("the node refused the new SSH credential; keeping the old session")
                && !log.contains("PRIVATE KEY"),
            "{}",
            bridge.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;

        // The stream opened before the rotation still works; once it
        // ends, the old session closes.
        echo_round_trip(&mut held.stream, b"after").await?;
        assert!(
            !bridge
                .log()
                .contains("closing the previous ssh session after a credential rollover"),
            "the old session must stay while its stream is open"
        );
        drop(held);
        bridge
            .wait_for_log(
                "closing the previous ssh session after a credential rollover",
                Duration::from_secs(10),
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::SeqCst);
        let mut errors = Vec::new();
        for l in loops {
            errors.extend(l.await?);
        }
        let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
        assert!(ok >= 10, "too little traffic to prove anything: {ok}");
        assert_eq!(
            failed,
            0,
            "{failed} of {} requests failed: {errors:?}",
            ok + failed
        );
        // The rolled node now logs in with the new certificate.
        let accepted_new = |log: &str| {
            log.lines()
                .any(|l| l.contains("Accepted publickey") && l.contains("ID bridge-new"))
        };
        assert!(accepted_new(&rolling.sshd.log()), "{}", rolling.sshd.log());
        assert!(
            !accepted_new(&refusing.sshd.log()),
            "{}",
            refusing.sshd.log()
        );
        bridge.sigterm()?;
        bridge.wait_exit(Duration::from_secs(10)).await?;
        Ok(())
    })
    .await
}
