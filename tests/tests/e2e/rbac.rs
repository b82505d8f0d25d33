//! The bridge's RBAC (`sshbridge manifests rbac`) applied to a real
//! kube-apiserver 1.20 that authorizes with RBAC: the bridge's service
//! account may make exactly the calls its config needs (checked with
//! `kubectl auth can-i` and by the bridge's own API code), nothing more.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, WatchEvent};
use sshbridge_config::Kubernetes;
use sshbridge_kubeapi::lease::{ElectionSettings, Leadership};
use sshbridge_kubeapi::record::KubeStore;
use sshbridge_kubeapi::status::{self, Publisher};
use sshbridge_kubeapi::tokenreview::{ReviewFailure, TokenReviewer};
use sshbridge_migrate::{MigrationState, Store};
use sshbridge_sim::pki::Pki;
use sshbridge_tests::apiserver::ControlPlane;
use sshbridge_tests::inventory::{api_only_rbac, kubectl_ok};
use sshbridge_tests::manifests::generate;
use tokio_stream::StreamExt;

use crate::support::{record_watch_works, within};

/// A file migration store (`[migration]` body).
const FILE_STORE: &str = "store = \"file:/var/lib/sshbridge/migration.json\"\n";
/// A shared record and its Lease (`[migration]` body).
const SHARED_STORE: &str = "store = \"kubernetes:kube-system/sshbridge-migration\"\n\
[migration.leader_election]\nlease_duration = \"4s\"\nrenew_deadline = \"3s\"\nretry_period = \"500ms\"\n";

/// A bridge config in `dir` with the `[migration]` body `migration` and
/// `sections` (placeholder key files).
fn config(dir: &Path, name: &str, migration: &str, sections: &str) -> anyhow::Result<PathBuf> {
    for f in ["id_ed25519", "known_hosts", "k.crt", "k.key"] {
        let p = dir.join(f);
        std::fs::write(&p, "placeholder\n")?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    }
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[bridge]\nid = \"cp-1\"\n[egress]\nhttp_connect_uds = \"/run/sshbridge/egress.sock\"\n\
             [ssh]\nidentity = \"id_ed25519\"\nknown_hosts = \"known_hosts\"\n\
             [admin]\nlisten = \"unix:/run/sshbridge/admin.sock\"\n\
             [migration]\n{migration}[kubernetes]\n{sections}"
        ),
    )?;
    Ok(path)
}

/// Per-bridge status objects in their own namespace.
const STATUS: &str = "[ha]\nstatus = \"kubernetes:sshbridge-status\"\n";
const INVENTORY: &str = "[inventory]\nsource = \"kubernetes\"\n";
const TOKENS: &str = "[konnectivity]\nagent_listen = \"10.0.0.1:8132\"\ncert = \"k.crt\"\n\
key = \"k.key\"\nagent_auth = \"tokenreview\"\n[konnectivity.tokenreview]\n\
service_accounts = [\"agents/konnectivity-agent\"]\n";

/// `kubectl auth can-i ARGS --as=USER` for every `(USER, ARGS, WANT)`, all
/// at once (one kubectl process each); fails naming each answer that is
/// not `WANT` (`yes` for true, `no` for false).
async fn can_i_all(cp: &ControlPlane, checks: &[(&str, &[&str], bool)]) -> anyhow::Result<()> {
    let mut running = Vec::new();
    for (user, args, want) in checks {
        let child = cp
            .kubectl_command()
            .args(["auth", "can-i"])
            .args(*args)
            .arg(format!("--as={user}"))
            .spawn()?;
        running.push((user, args, want, child));
    }
    let mut wrong = Vec::new();
    for (user, args, want, child) in running {
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .map_err(|_| anyhow::anyhow!("kubectl auth can-i {args:?} did not end within 60s"))??;
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let got = match said.as_str() {
            "yes" => true,
            "no" => false,
            _ => anyhow::bail!(
                "kubectl auth can-i {args:?} --as={user}: {said}{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        };
        if got != *want {
            wrong.push(format!("can-i {args:?} as {user}: {said}"));
        }
    }
    anyhow::ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// The admin kubeconfig, impersonating `user` (kubeconfig `as:`): the
/// bridge's API code then runs with that user's permissions only.
fn kubeconfig_as(cp: &ControlPlane, user: &str) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(cp.kubeconfig())?;
    let marker = "- name: admin\n  user:\n";
    anyhow::ensure!(text.contains(marker), "unexpected kubeconfig:\n{text}");
    let path = cp
        .dir
        .join(format!("kubeconfig-{}", user.replace(':', "-")));
    std::fs::write(
        &path,
        text.replace(marker, &format!("{marker}    as: {user:?}\n")),
    )?;
    Ok(path)
}

#[tokio::test]
async fn the_generated_rbac_grants_the_bridge_what_its_config_needs_and_no_more(
) -> anyhow::Result<()> {
    within(180, async {
        let dir = tempfile::tempdir()?;
        let pki = Pki::new("rbac-e2e-ca")?;
        let ca = pki.write_ca(dir.path())?;
        let cp = api_only_rbac(&pki, &ca, &dir.path().join("cp")).await?;
        kubectl_ok(&cp, &["create", "namespace", "agents"]).await?;
        // Bridge "full": the Node inventory and agents' tokens; bridge
        // "inv": the inventory only, so no token or pod rules.
        let full = config(
            dir.path(),
            "full.toml",
            FILE_STORE,
            &format!("{INVENTORY}{TOKENS}"),
        )?;
        let inv = config(dir.path(), "inv.toml", FILE_STORE, INVENTORY)?;
        // Bridge "ha": the shared migration record, its Lease and the
        // status objects in a namespace of their own.
        let ha = config(dir.path(), "ha.toml", SHARED_STORE, STATUS)?;
        kubectl_ok(&cp, &["create", "namespace", "sshbridge-status"]).await?;
        for (cfg, name) in [
            (&full, "sshbridge"),
            (&inv, "sshbridge-inv"),
            (&ha, "sshbridge-ha"),
        ] {
            let yaml = generate(
                cfg,
                &["rbac", "--name", name, "--kubernetes-version", "1.20"],
            )?;
            let file = dir.path().join(format!("{name}.yaml"));
            std::fs::write(&file, &yaml)?;
            kubectl_ok(&cp, &["apply", "-f", &file.display().to_string()]).await?;
        }
        let sa_full = "system:serviceaccount:kube-system:sshbridge";
        let sa_inv = "system:serviceaccount:kube-system:sshbridge-inv";
        let sa_ha = "system:serviceaccount:kube-system:sshbridge-ha";
        let (record, lease) = (
            "configmaps/sshbridge-migration",
            "leases.coordination.k8s.io/sshbridge-migration-leader",
        );
        let tokenreviews = "tokenreviews.authentication.k8s.io";
        can_i_all(
            &cp,
            &[
                (sa_full, &["list", "nodes"][..], true),
                (sa_full, &["watch", "nodes"], true),
                (sa_full, &["create", tokenreviews], true),
                (sa_full, &["get", "pods", "-n", "agents"], true),
                (sa_full, &["get", "pods", "-n", "default"], false),
                (sa_full, &["list", "pods", "-n", "agents"], false),
                (sa_full, &["list", "secrets", "-n", "kube-system"], false),
                (sa_full, &["get", "secrets", "-n", "agents"], false),
                (sa_full, &["patch", "nodes"], false),
                (sa_full, &["delete", "nodes"], false),
                (sa_inv, &["list", "nodes"], true),
                (sa_inv, &["watch", "nodes"], true),
                (sa_inv, &["create", tokenreviews], false),
                (sa_inv, &["get", "pods", "-n", "agents"], false),
                (sa_inv, &["list", "secrets", "-n", "kube-system"], false),
                (sa_inv, &["get", record, "-n", "kube-system"], false),
                (sa_ha, &["get", record, "-n", "kube-system"], true),
                (sa_ha, &["update", record, "-n", "kube-system"], true),
                (sa_ha, &["watch", record, "-n", "kube-system"], true),
                (sa_ha, &["create", "configmaps", "-n", "kube-system"], true),
                (
                    sa_ha,
                    &["get", "configmaps/other", "-n", "kube-system"],
                    false,
                ),
                (sa_ha, &["list", "configmaps", "-n", "kube-system"], false),
                (sa_ha, &["get", record, "-n", "default"], false),
                (sa_ha, &["update", lease, "-n", "kube-system"], true),
                (
                    sa_ha,
                    &[
                        "update",
                        "leases.coordination.k8s.io/other",
                        "-n",
                        "kube-system",
                    ],
                    false,
                ),
                (sa_ha, &["list", "nodes"], false),
                (
                    sa_ha,
                    &["list", "configmaps", "-n", "sshbridge-status"],
                    true,
                ),
                (
                    sa_ha,
                    &[
                        "update",
                        "configmaps/sshbridge-status-cp-1",
                        "-n",
                        "sshbridge-status",
                    ],
                    true,
                ),
                (
                    sa_ha,
                    &["create", "configmaps", "-n", "sshbridge-status"],
                    true,
                ),
                (
                    sa_ha,
                    &[
                        "delete",
                        "configmaps/sshbridge-status-cp-1",
                        "-n",
                        "sshbridge-status",
                    ],
                    false,
                ),
                (sa_ha, &["list", "configmaps", "-n", "default"], false),
                (
                    sa_inv,
                    &["list", "configmaps", "-n", "sshbridge-status"],
                    false,
                ),
                (
                    "system:serviceaccount:kube-system:nobody",
                    &["list", "nodes"],
                    false,
                ),
            ],
        )
        .await?;

        // The bridge's own calls under those identities: the Node list
        // and watch of the inventory, a TokenReview and the pod lookup.
        cp.register_node("node-a", "127.0.0.1".parse()?, 10250)
            .await?;
        let as_full = client(&kubeconfig_as(&cp, sa_full)?).await?;
        let nodes: Api<Node> = Api::all(as_full.clone());
        let listed = nodes.list(&ListParams::default()).await?;
        anyhow::ensure!(listed.items.len() == 1, "{:?}", listed.items.len());
        let rv = listed.metadata.resource_version.unwrap_or_default();
        let wp = kube::api::WatchParams::default().timeout(20);
        let mut watch = std::pin::pin!(nodes.watch(&wp, &rv).await?);
        cp.register_node("node-b", "127.0.0.2".parse()?, 10250)
            .await?;
        let event = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .map_err(|_| anyhow::anyhow!("no watch event as {sa_full} within 20s"))?;
        match event {
            Some(Ok(WatchEvent::Added(n))) if n.metadata.name.as_deref() == Some("node-b") => {}
            other => anyhow::bail!("watching nodes as {sa_full}: {other:?}"),
        }
        let reviewer = TokenReviewer::new(as_full, Vec::new());
        match reviewer.review("not-a-token").await {
            Err(ReviewFailure::Rejected(_)) => {}
            other => anyhow::bail!("a TokenReview as {sa_full}: {other:?}"),
        }
        match reviewer.pod_node("agents", "gone", "uid").await {
            Err(ReviewFailure::NoBinding(why)) if why.contains("does not exist") => {}
            other => anyhow::bail!("a pod lookup as {sa_full}: {other:?}"),
        }
        let as_inv = client(&kubeconfig_as(&cp, sa_inv)?).await?;
        let listed = Api::<Node>::all(as_inv.clone())
            .list(&ListParams::default())
            .await?;
        anyhow::ensure!(listed.items.len() == 2, "{:?}", listed.items.len());
        match TokenReviewer::new(as_inv, Vec::new())
            .review("not-a-token")
            .await
        {
            Err(ReviewFailure::Unavailable(why)) if why.contains("403") => {}
            other => anyhow::bail!("a TokenReview as {sa_inv} must be forbidden: {other:?}"),
        }

        // The shared record and the Lease under the "ha" account: the
        // record is created, read back and updated; the elector leads.
        let as_ha = client(&kubeconfig_as(&cp, sa_ha)?).await?;
        let mut store = KubeStore::new(as_ha.clone(), "kube-system", "sshbridge-migration");
        anyhow::ensure!(store.load().await?.is_none(), "a record before any write");
        let state = MigrationState::default();
        store.save(&state).await?;
        store.save(&state).await?;
        anyhow::ensure!(store.load().await?.is_some(), "the record as {sa_ha}");
        let mut follower = KubeStore::new(
            client(&kubeconfig_as(&cp, sa_ha)?).await?,
            "kube-system",
            "sshbridge-migration",
        );
        record_watch_works(&mut follower, &mut store).await?;
        let settings = ElectionSettings {
            namespace: "kube-system".into(),
            name: "sshbridge-migration-leader".into(),
            identity: "cp-1".into(),
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_millis(500),
        };
        let leadership = Leadership::start(as_ha, settings);
        let mut led = leadership.watch();
        tokio::time::timeout(Duration::from_secs(20), led.wait_for(|s| s.leading))
            .await
            .map_err(|_| anyhow::anyhow!("{sa_ha} did not lead within 20s"))??;
        leadership.release().await;

        // The status objects under the "ha" account: its own is created,
        // replaced, and listed with the others'.
        let mut publisher = Publisher::new(
            client(&kubeconfig_as(&cp, sa_ha)?).await?,
            "sshbridge-status",
            "cp-1",
        );
        for _ in 0..2 {
            publisher.publish(Duration::from_secs(5), "{}").await?;
        }
        let seen = status::list(
            client(&kubeconfig_as(&cp, sa_ha)?).await?,
            "sshbridge-status",
        )
        .await?;
        anyhow::ensure!(
            seen.iter().any(|o| o.bridge == "cp-1"),
            "{sa_ha} lists its own status object: {} listed",
            seen.len()
        );
        Ok(())
    })
    .await
}

async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    Ok(sshbridge_kubeapi::client(&Kubernetes {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        context: None,
    })
    .await?)
}
