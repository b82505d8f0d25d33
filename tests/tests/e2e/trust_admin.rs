//! The admin API's trust boundary end to end: a TCP listener answers only
//! callers with the token or a client certificate, browsers are refused,
//! and configs that would open it (or take agents at their word without
//! saying so) are refused by `config check` and at start.

use std::time::Duration;

use sshbridge_tests::trust::admin_request;
use sshbridge_tests::{sshbridge_cli, Bridge, Cluster};

use crate::support::within;

/// Bound for the node to become ready to migrate on a busy box.
const SEEN: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_tcp_admin_api_answers_only_callers_with_a_token_or_certificate() -> anyhow::Result<()> {
    within(150, async {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let (config, creds) = cluster.with_tcp_admin(cluster.bridge_config()?, true, true)?;
        // A node with its agent, so an apply that gets through does move it.
        let k = cluster.konnectivity_config(&config)?;
        let _agent = cluster.start_agent(&k, &cluster.nodes[0]).await?;
        let target = cluster.nodes[0].kubelet_target();
        let bridge = Bridge::start_with(config, Some(k), Some(&target)).await?;
        let (addr, tls, mtls) = (creds.addr, creds.tls.clone(), creds.mtls.clone());
        let token = creds.token.clone().unwrap();
        let bearer = format!("Bearer {token}");
        let auth = [("Authorization", bearer.as_str())];
        let get = |tls, path: &'static str, headers: &'static [(&'static str, &'static str)]| {
            admin_request(addr, tls, "GET", path, headers, "")
        };

        // Probes stay open; everything else needs credentials.
        assert_eq!(get(tls.clone(), "/livez", &[]).await?.status, 200);
        assert_ne!(get(tls.clone(), "/readyz", &[]).await?.status, 401);
        for path in ["/report", "/metrics", "/migration"] {
            let a = get(tls.clone(), path, &[]).await?;
            assert_eq!(a.status, 401, "{path} without credentials: {a:?}");
        }
        let wrong = [("Authorization", "Bearer not-the-token")];
        let a = admin_request(addr, tls.clone(), "GET", "/report", &wrong, "").await?;
        assert_eq!(a.status, 401, "a wrong token: {a:?}");

        // Wait until node-0 is ready to migrate: an apply would move it.
        let ready = async {
            loop {
                let plan = admin_request(addr, tls.clone(), "POST", "/migration/plan", &auth, "{}");
                let plan = plan.await?;
                let parsed = serde_json::from_str::<sshbridge_migrate::Plan>(&plan.body);
                if plan.status == 200 && parsed.is_ok_and(|p| p.not_ready.is_empty()) {
                    return Ok::<_, anyhow::Error>(());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::time::timeout(SEEN, ready)
            .await
            .map_err(|_| anyhow::anyhow!("node-0 never became ready to migrate"))??;

        // A POST without credentials is refused and changes nothing.
        let apply = r#"{"nodes":["node-0"],"soak":"60s"}"#;
        let before = admin_request(addr, tls.clone(), "GET", "/migration", &auth, "").await?;
        assert_eq!(before.status, 200, "{before:?}");
        let a = admin_request(addr, tls.clone(), "POST", "/migration/apply", &[], apply).await?;
        assert_eq!(a.status, 401, "unauthenticated apply: {a:?}");
        assert!(a.body.contains("authentication required"), "{a:?}");
        let after = admin_request(addr, tls.clone(), "GET", "/migration", &auth, "").await?;
        assert_eq!(
            after.body, before.body,
            "the refused POST changed the rollout"
        );

        // A browser's request is refused even with the token.
        let origin = [
            ("Authorization", bearer.as_str()),
            ("Origin", "http://evil.example"),
        ];
        let a = admin_request(
            addr,
            tls.clone(),
            "POST",
            "/migration/apply",
            &origin,
            apply,
        )
        .await?;
        assert_eq!(a.status, 403, "a request with Origin: {a:?}");
        let again = admin_request(addr, tls.clone(), "GET", "/migration", &auth, "").await?;
        assert_eq!(
            again.body, before.body,
            "the refused POST changed the rollout"
        );

        // With the token, and with a client certificate, it works.
        let a = admin_request(addr, tls.clone(), "GET", "/report", &auth, "").await?;
        assert_eq!(a.status, 200, "{a:?}");
        let a = admin_request(addr, mtls.clone(), "GET", "/report", &[], "").await?;
        assert_eq!(a.status, 200, "with a client certificate: {a:?}");
        // The same apply, authenticated, does change the rollout: the
        // refusals above were the credentials, not the request.
        let a = admin_request(addr, mtls.clone(), "POST", "/migration/apply", &[], apply).await?;
        assert_eq!(a.status, 200, "an authenticated apply: {a:?}");
        let applied = admin_request(addr, tls.clone(), "GET", "/migration", &auth, "").await?;
        assert_ne!(
            applied.body, before.body,
            "the authenticated apply changed nothing"
        );
        let a = admin_request(addr, mtls, "POST", "/migration/pause", &[], "").await?;
        assert_eq!(a.status, 200, "an authenticated pause: {a:?}");

        // The CLI: refused without flags, served with --token-file or
        // with --admin-cert/--admin-key.
        let admin = addr.to_string();
        let ca = creds.ca.display().to_string();
        let out =
            sshbridge_cli(["report", "--admin", &admin, "--admin-ca", &ca, "-o", "json"]).await?;
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains("401"), "{}", out.stderr);
        let token_file = creds.token_file.clone().unwrap().display().to_string();
        let out = sshbridge_cli([
            "report",
            "--admin",
            &admin,
            "--admin-ca",
            &ca,
            "--token-file",
            &token_file,
            "-o",
            "json",
        ])
        .await?;
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(out.stdout.contains("\"node-0\""), "{}", out.stdout);
        let (cert, key) = creds.client.clone().unwrap();
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let out = sshbridge_cli([
            "migrate",
            "status",
            "--admin",
            &admin,
            "--admin-ca",
            &ca,
            "--admin-cert",
            &cert,
            "--admin-key",
            &key,
            "-o",
            "json",
        ])
        .await?;
        assert_eq!(out.code, Some(0), "{out:?}");

        assert!(
            !bridge.log().contains(&token),
            "the token appeared in the log"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_plain_tcp_admin_api_takes_a_token_and_refuses_the_rest() -> anyhow::Result<()> {
    within(120, async {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let (config, creds) = cluster.with_tcp_admin(cluster.bridge_config()?, true, false)?;
        let _bridge = Bridge::start(config, Some(&cluster.nodes[0].kubelet_target())).await?;
        let token = creds.token.clone().unwrap();
        let bearer = format!("Bearer {token}");
        let a = admin_request(creds.addr, None, "POST", "/migration/pause", &[], "").await?;
        assert_eq!(a.status, 401, "{a:?}");
        let auth = [("Authorization", bearer.as_str())];
        let a = admin_request(creds.addr, None, "GET", "/report", &auth, "").await?;
        assert_eq!(a.status, 200, "{a:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn config_check_and_start_refuse_unauthenticated_listeners() -> anyhow::Result<()> {
    within(120, async {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let config = cluster.bridge_config()?;
        let k = cluster.konnectivity_config(&config)?;
        let dir = config.dir.clone();
        let path = dir.join("check.toml");
        let write = |text: String| std::fs::write(&path, text);
        let check = || sshbridge_cli(["config", "check", "--config", path.to_str().unwrap()]);

        // The kit's own config (proven identity, client_ca) is clean.
        write(config.to_toml_with(Some(&k)))?;
        let out = check().await?;
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(!out.stderr.contains("warning"), "{}", out.stderr);

        // Without client_ca and without the opt-out: an error, and the
        // daemon does not start.
        let mut open = k.clone();
        open.client_ca = None;
        write(config.to_toml_with(Some(&open)))?;
        let out = check().await?;
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(
            out.stderr.contains("konnectivity.client_ca: not set"),
            "{}",
            out.stderr
        );
        let run = sshbridge_cli(["run", "--config", path.to_str().unwrap()]).await?;
        assert_eq!(run.code, Some(1), "{run:?}");
        assert!(
            run.stderr.contains("konnectivity.client_ca"),
            "{}",
            run.stderr
        );

        // The explicit opt-out loads, with a warning.
        open.identity = Some("claimed".into());
        write(config.to_toml_with(Some(&open)))?;
        let out = check().await?;
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(
            out.stderr.contains("warning:") && out.stderr.contains("can serve any node"),
            "{}",
            out.stderr
        );

        // A TCP admin listener with neither token nor client CA.
        let text = config.to_toml().replace(
            &format!("listen = \"unix:{}\"", config.admin_socket().display()),
            "listen = \"127.0.0.1:18133\"",
        );
        assert!(text.contains("127.0.0.1:18133"));
        write(text)?;
        let out = check().await?;
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(
            out.stderr.contains("admin.listen: TCP listener"),
            "{}",
            out.stderr
        );
        let run = sshbridge_cli(["run", "--config", path.to_str().unwrap()]).await?;
        assert_eq!(
            run.code,
            Some(1),
            "the daemon started with an open admin API: {run:?}"
        );
        Ok(())
    })
    .await
}
