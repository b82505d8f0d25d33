//! Trust boundaries end to end: an agent serves only the node its
//! certificate names (real `sshbridge agent` processes, real mTLS), and a
//! TCP admin API answers only callers that authenticate.

use std::time::Duration;

use sshbridge::report::PathState;
use sshbridge_tests::trust::admin_request;
use sshbridge_tests::{dials_ok, konnectivity_state, sshbridge_cli, Agent, Bridge, Cluster};

use crate::support::{konnectivity_setup, within};

/// Bound for a refusal to be seen or a path to come up on a busy box.
const SEEN: Duration = Duration::from_secs(30);

/// `sshbridge_konnectivity_agents_refused_total{reason}` from `/metrics`.
async fn refused(bridge: &Bridge, reason: &str) -> anyhow::Result<u64> {
    let metrics = bridge.admin_get("/metrics").await?.body;
    let series = format!("sshbridge_konnectivity_agents_refused_total{{reason=\"{reason}\"}} ");
    Ok(metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Waits until the bridge counted a refusal for `reason` and the agent's
/// own log shows the refusal's message.
async fn wait_refused(
    bridge: &Bridge,
    agent: &Agent,
    reason: &str,
    says: &str,
) -> anyhow::Result<()> {
    let wait = async {
        loop {
            if refused(bridge, reason).await? >= 1 && agent.log().contains(says) {
                return Ok::<_, anyhow::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(SEEN, wait).await.map_err(|_| {
        anyhow::anyhow!(
            "no refusal {reason:?} saying {says:?} for {}; agent log:\n{}",
            agent.spec.agent_id,
            agent.log_tail(20)
        )
    })?
}

#[tokio::test]
async fn an_agent_with_node_a_certificate_cannot_serve_node_b() -> anyhow::Result<()> {
    within(180, async {
        // node-0 is "node-a" (no agent of its own), node-1 is "node-b",
        // served by its real agent.
        let s = konnectivity_setup(2, &[1], &[1], |_| {}).await?;
        let (cluster, bridge) = (&s.cluster, &s.bridge);
        let k = bridge.konnectivity.clone().unwrap();
        let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
        let real = s.agents[1].as_ref().unwrap();
        let connects = |a: &Agent| {
            a.log()
                .matches("connected to the Konnectivity server")
                .count()
        };
        let real_connects = connects(real);
        assert_eq!(real_connects, 1, "{}", real.log_tail(20));

        // Each impostor presents node-a's certificate and claims node-b
        // one way: by name, by address, by pod CIDR, by node-b's agent ID.
        let impostors = [
            (
                "imp-host",
                format!("host={}", b.name),
                "host",
                format!("claims host={}", b.name),
            ),
            (
                "imp-ipv4",
                format!("ipv4={}", b.address),
                "address",
                format!("claims address {}", b.address),
            ),
            (
                "imp-cidr",
                format!("cidr={}", b.pod_cidr),
                "cidr",
                format!("claims cidr={}", b.pod_cidr),
            ),
            (
                "agent-node-1",
                format!("host={}", a.name),
                "agent_id_taken",
                "already held by an agent of node-1".to_string(),
            ),
        ];
        let mut running = Vec::new();
        for (id, ids, reason, says) in impostors {
            let mut spec = cluster.agent_spec(&k, a);
            spec.agent_id = id.into();
            spec.identifiers = ids;
            // Its own log, apart from the real agent-node-1's.
            spec.dir = cluster.dir.path().join("impostors");
            std::fs::create_dir_all(&spec.dir)?;
            let agent = Agent::start(spec).await?;
            wait_refused(bridge, &agent, reason, &says).await?;
            running.push(agent);
        }
        let log = bridge.log();
        assert!(
            log.contains("Konnectivity agent refused") && log.contains("CN=system:node:node-0"),
            "the refusal is logged with the certificate subject"
        );

        // node-b's traffic all goes to its real agent, which was never
        // replaced; no impostor carried a single connection.
        let before = dials_ok(&bridge.report().await?, &b.name);
        for _ in 0..5 {
            crate::support::kubelet_via_connect(bridge, cluster, 1).await?;
        }
        let report = bridge.report().await?;
        let after = dials_ok(&report, &b.name);
        assert_eq!(
            after.1,
            before.1 + 5,
            "5 dials over node-b's konnectivity path"
        );
        assert_eq!(
            (
                connects(real),
                real.log()
                    .contains("stream to the Konnectivity server ended"),
            ),
            (real_connects, false),
            "node-b's agent lost its stream:\n{}",
            real.log_tail(20)
        );
        assert!(
            !bridge.log().contains("stream replaced"),
            "an agent stream was replaced"
        );
        assert_ne!(
            konnectivity_state(&report, &a.name),
            PathState::Up,
            "an impostor serves node-a"
        );
        for agent in &running {
            assert!(
                !agent.log().contains("connection established"),
                "{} carried a connection:\n{}",
                agent.spec.agent_id,
                agent.log_tail(20)
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_certificate_that_names_no_node_is_refused() -> anyhow::Result<()> {
    within(150, async {
        let s = konnectivity_setup(1, &[0], &[], |_| {}).await?;
        let (cluster, bridge) = (&s.cluster, &s.bridge);
        let k = bridge.konnectivity.clone().unwrap();
        let node = &cluster.nodes[0];
        let mut spec = cluster.agent_spec(&k, node);
        // Signed by the right CA, truthful claims, but CN konnectivity-agent.
        spec.identity = Some(k.agent_identity.clone());
        spec.agent_id = "shared-cert".into();
        let agent = Agent::start(spec).await?;
        wait_refused(bridge, &agent, "unknown_node", "names no configured node").await?;
        let report = bridge.report().await?;
        assert_ne!(konnectivity_state(&report, &node.name), PathState::Up);
        let c = bridge.egress().connect(&node.kubelet_target()).await?;
        assert_eq!(c.status, 503, "no agent may serve node-0: {c:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_tcp_admin_api_answers_only_callers_with_a_token_or_certificate() -> anyhow::Result<()> {
    within(150, async {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let (config, creds) = cluster.with_tcp_admin(cluster.bridge_config()?, true, true)?;
        let bridge = Bridge::start(config, Some(&cluster.nodes[0].kubelet_target())).await?;
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
        let a = admin_request(addr, mtls, "POST", "/migration/pause", &[], "").await?;
        assert_ne!(a.status, 401, "an authenticated POST: {a:?}");

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
