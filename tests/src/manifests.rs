//! Generated manifests as an operator gets them (`sshbridge manifests ...`
//! run as a program), and the offline validator that checks them against
//! each Kubernetes release's published schemas: `kubernetes-validate`,
//! installed by `scripts/k8s-validate` (whose `K8S_VALIDATE_BINS` names
//! one executable per installed release of it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use crate::bridge::bridge_bin;

/// Runs `sshbridge manifests ARGS --config CONFIG`; its stdout, or an
/// error with its stderr.
pub fn generate(config: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bridge_bin()?)
        .arg("manifests")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .context("running sshbridge manifests")?;
    if !out.status.success() {
        bail!(
            "sshbridge manifests {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `(kind, name)` of each document of a generated YAML stream, in order
/// (top-level `kind:` and the first `  name:` under `metadata:`).
pub fn documents(yaml: &str) -> Vec<(String, String)> {
    yaml.split("\n---\n")
        .filter_map(|doc| {
            let kind = doc.lines().find_map(|l| l.strip_prefix("kind: "))?;
            let meta = doc.split("\nmetadata:\n").nth(1)?;
            let name = meta.lines().find_map(|l| l.strip_prefix("  name: "))?;
            Some((kind.to_string(), name.trim_matches('"').to_string()))
        })
        .collect()
}

/// One installed kubernetes-validate and the releases it has schemas for.
#[derive(Debug, Clone)]
pub struct Validator {
    /// Its virtualenv's python.
    pub python: PathBuf,
    /// kubernetes-validate's own version.
    pub version: String,
    /// Schema releases it ships, as `1.MINOR`.
    pub releases: Vec<String>,
}

/// What one validator run printed, by (file, release): its lines.
pub type Verdicts = BTreeMap<(PathBuf, String), Vec<String>>;

impl Validator {
    /// Every validator named by `K8S_VALIDATE_BINS`. Unset is an error:
    /// `scripts/test` always sets it.
    pub fn from_env() -> anyhow::Result<Vec<Validator>> {
        let bins = std::env::var("K8S_VALIDATE_BINS").context(
            "K8S_VALIDATE_BINS is not set: run `eval \"$(scripts/k8s-validate)\"` first (it \
             installs kubernetes-validate with the published schemas of Kubernetes 1.20 to 1.37); \
             scripts/test does this",
        )?;
        bins.split(':')
            .filter(|b| !b.is_empty())
            .map(|b| Validator::at(Path::new(b)))
            .collect()
    }

    fn at(bin: &Path) -> anyhow::Result<Validator> {
        let python = bin
            .parent()
            .context("validator without a directory")?
            .join("python");
        let out = Command::new(&python)
            .args([
                "-c",
                "import kubernetes_validate.utils as u, kubernetes_validate.version as v\n\
                 print(v.__version__)\n\
                 print(' '.join(u.major_minor(x) for x in u.all_versions()))",
            ])
            .output()
            .with_context(|| {
                format!("running {}: re-run scripts/k8s-validate", python.display())
            })?;
        anyhow::ensure!(
            out.status.success(),
            "{}: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout)?;
        let mut lines = text.lines();
        let version = lines.next().context("no version")?.to_string();
        let releases = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
        Ok(Validator {
            python,
            version,
            releases,
        })
    }

    /// Validates each `(file, release)` strictly (unknown fields are
    /// errors) in one process; every line it printed, by pair. The exit
    /// status is not trusted alone: a kind without a schema is only a
    /// warning to kubernetes-validate, so callers check the lines.
    pub fn validate(&self, pairs: &[(PathBuf, String)]) -> anyhow::Result<Verdicts> {
        let mut cmd = Command::new(&self.python);
        cmd.args(["-W", "ignore", "-c", include_str!("manifests/validate.py")]);
        for (file, release) in pairs {
            cmd.arg(format!("{release}={}", file.display()));
        }
        let out = cmd.output().context("running kubernetes-validate")?;
        anyhow::ensure!(
            out.status.success(),
            "kubernetes-validate {} crashed: {}",
            self.version,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut verdicts = Verdicts::new();
        let mut current = None;
        for line in String::from_utf8(out.stdout)?.lines() {
            if let Some(pair) = line.strip_prefix("@@ ") {
                let (release, path) = pair.split_once('=').context("bad marker")?;
                let key = (PathBuf::from(path), release.to_string());
                verdicts.insert(key.clone(), Vec::new());
                current = Some(key);
            } else if let Some(key) = &current {
                verdicts
                    .get_mut(key)
                    .expect("inserted")
                    .push(line.to_string());
            }
        }
        Ok(verdicts)
    }
}
