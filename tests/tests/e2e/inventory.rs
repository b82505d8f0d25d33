//! Node inventory from the Kubernetes API, against a real kube-apiserver
//! v1.20.2 (scripts/k8s-harness).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use sshbridge_config::Kubernetes;
use sshbridge_sim::pki::Pki;
use sshbridge_tests::inventory::api_only;

use crate::support::within;

/// The client `[kubernetes] kubeconfig` builds reaches the apiserver with
/// the kubeconfig's CA and client certificate, and lists the nodes a
/// kubelet registered.
#[tokio::test]
async fn kubeapi_client_from_a_kubeconfig_lists_nodes() -> anyhow::Result<()> {
    within(180, async {
        let dir = tempfile::tempdir()?;
        let pki = Pki::new("inventory-e2e-ca")?;
        let ca = pki.write_ca(dir.path())?;
        let cp = api_only(&pki, &ca, &dir.path().join("cp")).await?;
        let ip: IpAddr = "127.0.0.1".parse()?;
        cp.register_node("node-listed", ip, 10250).await?;
        let settings = Kubernetes {
            kubeconfig: Some(cp.kubeconfig().to_path_buf()),
            context: None,
        };
        let client = sshbridge_kubeapi::client(&settings).await?;
        let nodes: Api<Node> = Api::all(client);
        let list = nodes.list(&ListParams::default()).await?;
        let names: Vec<_> = list
            .items
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        anyhow::ensure!(names == ["node-listed"], "nodes listed: {names:?}");
        let addresses = list.items[0]
            .status
            .as_ref()
            .and_then(|s| s.addresses.clone())
            .unwrap_or_default();
        anyhow::ensure!(
            addresses
                .iter()
                .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1"),
            "status.addresses: {addresses:?}"
        );

        // A context the kubeconfig lacks is an error naming the file.
        let bad = Kubernetes {
            context: Some("nope".into()),
            ..settings
        };
        let Err(err) = sshbridge_kubeapi::client(&bad).await else {
            anyhow::bail!("a context the kubeconfig lacks was accepted");
        };
        let shown = err.to_string();
        anyhow::ensure!(
            shown.contains(&cp.kubeconfig().display().to_string()) && shown.contains("nope"),
            "{shown}"
        );
        Ok(())
    })
    .await
}
