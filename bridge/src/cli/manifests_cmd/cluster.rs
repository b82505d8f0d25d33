//! `--from-cluster`: the Kubernetes release of a reachable apiserver, from
//! its `/version`, fetched by kubectl (`kubectl get --raw /version`) so
//! that every kubeconfig kubectl accepts (client certificates, tokens,
//! exec plugins) works without sshbridge reimplementing them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sshbridge::manifests::KubeVersion;

/// Bound on kubectl's answer (its own request timeout is set shorter).
const WAIT: Duration = Duration::from_secs(30);

/// The release `kubectl [--kubeconfig FILE] get --raw /version` reports.
pub fn version(kubectl: &Path, kubeconfig: Option<&Path>) -> anyhow::Result<KubeVersion> {
    let mut cmd = Command::new(kubectl);
    if let Some(k) = kubeconfig {
        cmd.arg(format!("--kubeconfig={}", k.display()));
    }
    let which = match kubeconfig {
        Some(k) => format!("the cluster of {}", k.display()),
        None => "kubectl's current cluster ($KUBECONFIG or ~/.kube/config)".to_string(),
    };
    cmd.args(["--request-timeout=20s", "get", "--raw", "/version"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "--from-cluster runs {} to read /version and could not start it; \
             pass --kubectl PATH, or --kubernetes-version X.Y instead",
            kubectl.display()
        )
    })?;
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "--from-cluster: {} get --raw /version did not answer within {WAIT:?} for {which}; \
                 check that the apiserver is reachable, or pass --kubernetes-version X.Y",
                kubectl.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "--from-cluster: {} get --raw /version failed for {which}: {}; fix the kubeconfig \
             (--kubeconfig FILE) or pass --kubernetes-version X.Y",
            kubectl.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse(&out.stdout).with_context(|| format!("--from-cluster: /version of {which}"))
}

/// The release in a `/version` answer (its `gitVersion`, e.g. `v1.20.2`).
fn parse(body: &[u8]) -> anyhow::Result<KubeVersion> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Info {
        git_version: String,
    }
    let info: Info = serde_json::from_slice(body).with_context(|| {
        format!(
            "not a Kubernetes version answer: {:?}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )
    })?;
    Ok(info.git_version.parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_git_version_of_a_version_answer() {
        let body =
            br#"{"major":"1","minor":"20+","gitVersion":"v1.20.2-eks-1","platform":"linux/amd64"}"#;
        assert_eq!(parse(body).unwrap(), KubeVersion { minor: 20 });
        let err = parse(br#"{"gitVersion":"v1.19.16"}"#).unwrap_err();
        assert!(format!("{err:#}").contains("1.20 to 1.37"), "{err:#}");
        assert!(parse(b"<html>").is_err());
    }
}
