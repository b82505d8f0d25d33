//! The generated manifests against what reads them: the published schemas
//! of every Kubernetes release of the support range (kubernetes-validate,
//! strict), a real kube-apiserver 1.20 (`kubectl apply --dry-run=server`),
//! and systemd (`systemd-analyze verify`). The EgressSelectorConfiguration
//! has no OpenAPI schema; the apiserver tests load the generated file
//! instead (`apiserver.rs`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sshbridge::manifests::KubeVersion;
use sshbridge_sim::pki::Pki;
use sshbridge_tests::apiserver::{Binaries, ControlPlane};
use sshbridge_tests::bridge::bridge_bin;
use sshbridge_tests::manifests::{documents, generate, Validator};

use crate::support::within;

/// A document a manifest must hold: `[kind, name]`.
type Doc = [&'static str; 2];

const UPSTREAM_IMAGE: &str = "registry.k8s.io/kas-network-proxy/proxy-agent:v0.33.1";

/// Configs covering every branch of the generators: (a) admin on a
/// unix socket, agents with their nodes' own identity, sshbridge's image;
/// (b) admin on TCP, agents sharing one certificate, upstream's image;
/// (c) the Node inventory and agents' tokens, for the bridge's RBAC.
struct Configs {
    dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    c: PathBuf,
}

fn configs() -> anyhow::Result<Configs> {
    let dir = tempfile::tempdir()?;
    for f in [
        "id_ed25519",
        "known_hosts",
        "k.crt",
        "k.key",
        "ca.crt",
        "token",
    ] {
        let p = dir.path().join(f);
        std::fs::write(&p, "placeholder\n")?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    }
    let write = |name: &str, admin: &str, identity: &str| -> anyhow::Result<PathBuf> {
        let text = format!(
            "[bridge]\nid = \"cp-1\"\n[egress]\nhttp_connect_uds = \"/run/sshbridge/egress.sock\"\n\
             grpc_uds = \"/run/sshbridge/grpc.sock\"\n[ssh]\nidentity = \"id_ed25519\"\n\
             known_hosts = \"known_hosts\"\n[admin]\n{admin}\n[konnectivity]\n\
             agent_listen = \"10.0.0.1:8132\"\ncert = \"k.crt\"\nkey = \"k.key\"\n\
             client_ca = \"ca.crt\"\nidentity = \"{identity}\"\n[migration]\n\
             store = \"file:/var/lib/sshbridge/migration.json\"\n\
             [[node]]\nname = \"node-a\"\naddress = \"10.0.0.5\"\n"
        );
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    };
    let a = write(
        "a.toml",
        "listen = \"unix:/run/sshbridge/admin.sock\"",
        "proven",
    )?;
    let b = write(
        "b.toml",
        "listen = \"127.0.0.1:8133\"\ntoken_file = \"token\"",
        "claimed",
    )?;
    let c = dir.path().join("c.toml");
    std::fs::write(
        &c,
        "[bridge]\nid = \"cp-1\"\n[egress]\nhttp_connect_uds = \"/run/sshbridge/egress.sock\"\n\
         [ssh]\nidentity = \"id_ed25519\"\nknown_hosts = \"known_hosts\"\n\
         [admin]\nlisten = \"unix:/run/sshbridge/admin.sock\"\n[konnectivity]\n\
         agent_listen = \"10.0.0.1:8132\"\ncert = \"k.crt\"\nkey = \"k.key\"\n\
         agent_auth = \"tokenreview\"\n[konnectivity.tokenreview]\n\
         service_accounts = [\"kube-system/konnectivity-agent\"]\n[kubernetes]\n\
         [inventory]\nsource = \"kubernetes\"\n\
         [migration]\nstore = \"file:/var/lib/sshbridge/migration.json\"\n",
    )?;
    Ok(Configs { dir, a, b, c })
}

/// Every Kubernetes manifest for release `v`, written under `dir`: the
/// files and the `(kind, name)` documents each must hold.
fn render(c: &Configs, v: KubeVersion, dir: &Path) -> anyhow::Result<Vec<(PathBuf, Vec<Doc>)>> {
    let v = v.to_string();
    let agent = vec![
        ["ServiceAccount", "konnectivity-agent"],
        ["DaemonSet", "konnectivity-agent"],
    ];
    let pod = vec![["Pod", "sshbridge"]];
    let rbac = vec![
        ["ServiceAccount", "sshbridge"],
        ["ClusterRole", "sshbridge"],
        ["ClusterRoleBinding", "sshbridge"],
        ["Role", "sshbridge"],
        ["RoleBinding", "sshbridge"],
    ];
    let sets = [
        ("agent-a", &c.a, vec!["konnectivity-agent"], agent.clone()),
        (
            "agent-b",
            &c.b,
            vec!["konnectivity-agent", "--image", UPSTREAM_IMAGE],
            agent,
        ),
        ("pod-a", &c.a, vec!["static-pod"], pod.clone()),
        ("pod-b", &c.b, vec!["static-pod"], pod),
        ("rbac-c", &c.c, vec!["rbac"], rbac),
    ];
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (name, config, mut args, docs) in sets {
        args.extend(["--kubernetes-version", &v]);
        let yaml = generate(config, &args)?;
        let got: Vec<(String, String)> = documents(&yaml);
        let want: Vec<(String, String)> = docs
            .iter()
            .map(|[k, n]| (k.to_string(), n.to_string()))
            .collect();
        assert_eq!(got, want, "documents of {name} for {v}:\n{yaml}");
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, yaml)?;
        out.push((file, docs));
    }
    Ok(out)
}

/// Strict schema validation of every manifest, for every minor release
/// from 1.20 to 1.37, each against that release's own schemas; and the
/// newest DaemonSet (with maxSurge) is rejected by 1.20's, so the check can
/// fail.
#[test]
fn manifests_validate_against_the_schemas_of_every_release_in_the_range() -> anyhow::Result<()> {
    let validators = Validator::from_env()?;
    let c = configs()?;
    let mut jobs: Vec<Vec<(PathBuf, String)>> = vec![Vec::new(); validators.len()];
    let mut expected = Vec::new();
    for v in KubeVersion::range() {
        let release = v.to_string();
        let which = validators
            .iter()
            .position(|val| val.releases.contains(&release))
            .with_context(|| {
                format!(
                    "no installed kubernetes-validate has schemas for {release}: {validators:?}"
                )
            })?;
        for (file, docs) in render(&c, v, &c.dir.path().join(&release))? {
            jobs[which].push((file.clone(), release.clone()));
            expected.push((file, release.clone(), docs));
        }
    }
    let newest_agent = c
        .dir
        .path()
        .join(KubeVersion::NEWEST.to_string())
        .join("agent-a.yaml");
    let oldest = KubeVersion::OLDEST.to_string();
    let old = validators
        .iter()
        .position(|val| val.releases.contains(&oldest))
        .expect("found above");
    jobs[old].push((newest_agent.clone(), oldest.clone()));

    let mut verdicts = std::collections::BTreeMap::new();
    for (val, pairs) in validators.iter().zip(&jobs) {
        if !pairs.is_empty() {
            verdicts.extend(val.validate(pairs)?);
        }
    }
    let mut failures = Vec::new();
    for (file, release, docs) in &expected {
        let want: Vec<String> = docs
            .iter()
            .map(|[kind, name]| {
                format!(
                    "INFO {} passed for resource {}/{name} against version {release}",
                    file.display(),
                    kind.to_lowercase()
                )
            })
            .collect();
        let got = verdicts.get(&(file.clone(), release.clone()));
        if got != Some(&want) {
            failures.push(format!("{} for {release}: {got:?}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} manifest/release pairs failed schema validation:\n{}",
        failures.len(),
        expected.len(),
        failures.join("\n")
    );
    assert_eq!(expected.len(), 5 * 18, "every manifest for 1.20 to 1.37");
    let control = &verdicts[&(newest_agent, oldest)];
    assert!(
        control.iter().any(|l| l.starts_with("ERROR")
            && l.contains("daemonset/konnectivity-agent")
            && l.contains("'maxSurge' was unexpected")),
        "1.20's schema must reject the newest DaemonSet's maxSurge: {control:?}"
    );
    Ok(())
}

/// A real kube-apiserver 1.20 accepts every manifest generated for 1.20
/// (`kubectl apply --dry-run=server`), `--from-cluster` reads 1.20 from
/// it, and the newest DaemonSet is refused there, so the check can fail.
#[tokio::test]
async fn kube_apiserver_1_20_accepts_the_manifests_generated_for_it() -> anyhow::Result<()> {
    within(240, async {
        let bins = Binaries::from_env()?;
        let c = configs()?;
        let dir = c.dir.path().join("control-plane");
        std::fs::create_dir_all(&dir)?;
        let pki = Pki::new("e2e-manifests")?;
        let ca = pki.write_ca(&dir)?;
        // The generated egress file (sockets nobody dials here).
        let egress = dir.join("egress-selector.yaml");
        std::fs::write(&egress, generate(&c.a, &["egress-selector"])?)?;
        let cp = ControlPlane::start(&bins, &pki, &ca, &dir, &egress).await?;

        let kubeconfig = cp.kubeconfig().display().to_string();
        let kubectl = bins.kubectl.display().to_string();
        let from_cluster = generate(
            &c.a,
            &[
                "konnectivity-agent",
                "--from-cluster",
                "--kubeconfig",
                &kubeconfig,
                "--kubectl",
                &kubectl,
            ],
        )?;
        let pinned = generate(
            &c.a,
            &["konnectivity-agent", "--kubernetes-version", "1.20"],
        )?;
        assert!(
            from_cluster.contains("\n# For Kubernetes 1.20 "),
            "{from_cluster}"
        );
        assert_eq!(from_cluster, pinned);

        for (file, docs) in render(&c, KubeVersion::OLDEST, &c.dir.path().join("1.20"))? {
            let path = file.display().to_string();
            let (ok, out, err) = cp
                .kubectl(&["apply", "--dry-run=server", "-f", &path])
                .await?;
            assert!(ok, "kube-apiserver 1.20 refused {path}: {err}\n{out}");
            let want: String = docs
                .iter()
                .map(|[kind, name]| {
                    format!("{}/{name} created (server dry run)\n", kubectl_kind(kind))
                })
                .collect();
            assert_eq!(out, want, "{path}");
        }

        let newest = dir.join("newest-agent.yaml");
        std::fs::write(&newest, generate(&c.a, &["konnectivity-agent"])?)?;
        let path = newest.display().to_string();
        let (ok, out, err) = cp
            .kubectl(&["apply", "--dry-run=server", "-f", &path])
            .await?;
        assert!(
            !ok && err.contains("unknown field \"maxSurge\""),
            "1.20 must refuse the newest DaemonSet's maxSurge: {out}{err}"
        );
        Ok(())
    })
    .await
}

/// How kubectl names a kind in its output (`kind.group`, lower case).
fn kubectl_kind(kind: &str) -> String {
    match kind {
        "DaemonSet" => "daemonset.apps".into(),
        "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => {
            format!("{}.rbac.authorization.k8s.io", kind.to_lowercase())
        }
        other => other.to_lowercase(),
    }
}

/// `systemd-analyze verify` passes the unit naming the installed binary,
/// with no warning, and fails one naming a binary that is not there.
#[test]
fn systemd_analyze_verifies_the_unit() -> anyhow::Result<()> {
    let c = configs()?;
    let bin = bridge_bin()?.display().to_string();
    let verify = |bin: &str| -> anyhow::Result<(bool, String)> {
        let unit = c.dir.path().join("sshbridge.service");
        std::fs::write(&unit, generate(&c.a, &["systemd", "--bin", bin])?)?;
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .context("systemd-analyze is missing: scripts/test installs systemd")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    };
    let (ok, text) = verify(&bin)?;
    assert!(ok && text.is_empty(), "systemd-analyze verify: {text}");
    let (ok, text) = verify("/nonexistent/sshbridge")?;
    assert!(
        !ok && text.contains("/nonexistent/sshbridge is not executable"),
        "{text}"
    );
    Ok(())
}
