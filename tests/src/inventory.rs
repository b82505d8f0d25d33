//! Node inventory from the Kubernetes API: a real control plane (etcd +
//! kube-apiserver v1.20.2, [`ControlPlane`]) that only serves the API (its
//! egress goes direct), and the Node objects a test creates, relabels,
//! readdresses and deletes there.

use std::path::Path;

use sshbridge_sim::pki::Pki;

use crate::apiserver::{Binaries, ControlPlane};

/// An egress selector file that sends all of the apiserver's egress
/// direct: these tests use the apiserver only as the inventory's source.
const DIRECT_EGRESS: &str = "apiVersion: apiserver.k8s.io/v1beta1\n\
kind: EgressSelectorConfiguration\n\
egressSelections:\n\
- name: cluster\n  connection:\n    proxyProtocol: Direct\n";

/// Starts etcd + kube-apiserver in `dir` (certificates from `pki`, whose
/// CA is the file `ca`), egress direct.
pub async fn api_only(pki: &Pki, ca: &Path, dir: &Path) -> anyhow::Result<ControlPlane> {
    let bins = Binaries::from_env()?;
    std::fs::create_dir_all(dir)?;
    let egress = dir.join("egress-direct.yaml");
    std::fs::write(&egress, DIRECT_EGRESS)?;
    ControlPlane::start(&bins, pki, ca, dir, &egress).await
}

/// [`api_only`] with RBAC authorization
/// ([`ControlPlane::start_rbac`]): only the admin may do anything.
pub async fn api_only_rbac(pki: &Pki, ca: &Path, dir: &Path) -> anyhow::Result<ControlPlane> {
    let bins = Binaries::from_env()?;
    std::fs::create_dir_all(dir)?;
    let egress = dir.join("egress-direct.yaml");
    std::fs::write(&egress, DIRECT_EGRESS)?;
    ControlPlane::start_rbac(&bins, pki, ca, dir, &egress).await
}

/// A Node object as a test registers it: labels, the SSH address
/// annotation, `spec.podCIDR`, and (through the status subresource) its
/// InternalIP.
#[derive(Debug, Clone)]
pub struct NodeObject {
    /// `metadata.name`
    pub name: String,
    /// `metadata.labels`
    pub labels: Vec<(String, String)>,
    /// `sshbridge.io/ssh-address`, when set.
    pub ssh_address: Option<String>,
    /// `spec.podCIDR`, when set.
    pub pod_cidr: Option<String>,
    /// `status.addresses` InternalIP.
    pub internal_ip: String,
}

impl NodeObject {
    /// The object's JSON (without status).
    fn json(&self) -> serde_json::Value {
        let labels: serde_json::Map<String, serde_json::Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        let mut annotations = serde_json::Map::new();
        if let Some(a) = &self.ssh_address {
            annotations.insert("sshbridge.io/ssh-address".into(), a.clone().into());
        }
        let mut spec = serde_json::Map::new();
        if let Some(c) = &self.pod_cidr {
            spec.insert("podCIDR".into(), c.clone().into());
            spec.insert("podCIDRs".into(), vec![c.clone()].into());
        }
        serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": annotations},
            "spec": spec,
        })
    }
}

/// Creates `node` (POST), then sets its InternalIP through the status
/// subresource (a merge PATCH: v1.20 drops status on create and kubectl
/// 1.20 has no `--subresource`).
pub async fn create_node(cp: &ControlPlane, node: &NodeObject) -> anyhow::Result<()> {
    let r = cp
        .api
        .request(
            "POST",
            "/api/v1/nodes",
            Some(("application/json", &node.json().to_string())),
        )
        .await?;
    anyhow::ensure!(
        r.status == 201,
        "POST node {}: {} {}",
        node.name,
        r.status,
        r.body
    );
    set_internal_ip(cp, &node.name, &node.internal_ip).await
}

/// Replaces the node's `status.addresses` with one InternalIP.
pub async fn set_internal_ip(cp: &ControlPlane, name: &str, ip: &str) -> anyhow::Result<()> {
    let status = serde_json::json!({"status": {
        "addresses": [{"type": "InternalIP", "address": ip}],
    }});
    let r = cp
        .api
        .request(
            "PATCH",
            &format!("/api/v1/nodes/{name}/status"),
            Some(("application/merge-patch+json", &status.to_string())),
        )
        .await?;
    anyhow::ensure!(
        r.status == 200,
        "PATCH {name}/status: {} {}",
        r.status,
        r.body
    );
    Ok(())
}

/// Runs kubectl `args` and fails with its output unless it succeeds.
pub async fn kubectl_ok(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<String> {
    let (ok, out, err) = cp.kubectl(args).await?;
    anyhow::ensure!(ok, "kubectl {args:?} failed: {out}{err}");
    Ok(out)
}
