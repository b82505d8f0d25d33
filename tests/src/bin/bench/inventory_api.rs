//! The inventory group's API side: Node objects for the farm's servers,
//! created and deleted through the real kube-apiserver with a kube client
//! and bounded concurrency, timed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use tokio::sync::Semaphore;

/// API requests in flight at once (kube-apiserver's default limit for
/// mutating requests is 200).
pub const CONCURRENCY: usize = 48;
/// Bound on one API request.
const REQUEST: Duration = Duration::from_secs(30);

/// The annotation the bridge reads each node's SSH address from (the
/// farm's servers listen on OS-picked ports).
pub const SSH_ADDRESS: &str = "sshbridge.io/ssh-address";

/// The Node of farm node `i`: InternalIP its server's address, the SSH
/// address annotation its server's address and port.
pub fn node(i: usize, ssh: SocketAddr) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name(i)),
            annotations: Some(BTreeMap::from([(SSH_ADDRESS.into(), ssh.to_string())])),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: ssh.ip().to_string(),
            }]),
            ..NodeStatus::default()
        }),
        ..Node::default()
    }
}

/// The Node name of farm node `i`.
pub fn name(i: usize) -> String {
    format!("sim-{i}")
}

/// Creates the Nodes of farm nodes `range`, `CONCURRENCY` at a time;
/// returns how long it took. A Node whose status the apiserver dropped on
/// create gets it by a merge patch of the status subresource.
pub async fn create(
    api: &Api<Node>,
    addrs: &[SocketAddr],
    range: std::ops::Range<usize>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for i in range {
        let (api, gate, obj) = (api.clone(), gate.clone(), node(i, addrs[i]));
        set.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let made = bounded(api.create(&PostParams::default(), &obj))
                .await
                .with_context(|| format!("creating Node {}", name(i)))?;
            let has_status = made
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .is_some_and(|a| !a.is_empty());
            if !has_status {
                let status = serde_json::json!({ "status": obj.status });
                bounded(api.patch_status(
                    &name(i),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                ))
                .await
                .with_context(|| format!("setting the status of Node {}", name(i)))?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    join_all(&mut set).await?;
    Ok(start.elapsed())
}

/// Deletes the Nodes of farm nodes `range`, `CONCURRENCY` at a time;
/// returns how long it took.
pub async fn delete(api: &Api<Node>, range: std::ops::Range<usize>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for i in range {
        let (api, gate) = (api.clone(), gate.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            bounded(api.delete(&name(i), &DeleteParams::default()))
                .await
                .with_context(|| format!("deleting Node {}", name(i)))?;
            Ok::<_, anyhow::Error>(())
        });
    }
    join_all(&mut set).await?;
    Ok(start.elapsed())
}

async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> anyhow::Result<T> {
    Ok(tokio::time::timeout(REQUEST, f)
        .await
        .with_context(|| format!("no answer within {REQUEST:?}"))??)
}

async fn join_all(set: &mut tokio::task::JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(())
}
