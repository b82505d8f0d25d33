//! Small helpers shared by the e2e tests.

use std::future::Future;
use std::time::Duration;

use sshbridge_tests::{Bridge, Cluster, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs a whole test body under a deadline, so a hang fails instead of
/// blocking the suite.
pub async fn within<F: Future<Output = anyhow::Result<()>>>(
    secs: u64,
    body: F,
) -> anyhow::Result<()> {
    let (result, logs) = sshbridge_tests::bridge::capture_logs(async {
        tokio::time::timeout(Duration::from_secs(secs), body)
            .await
            .map_err(|_| anyhow::anyhow!("test did not finish within {secs}s"))?
    })
    .await;
    if result.is_err() {
        for log in logs {
            eprintln!("---- sshbridge log (last 200 lines) ----\n{log}");
        }
    }
    result
}

/// A cluster of `n` nodes and a bridge for all of them, ready (node-0's
/// kubelet reachable through it).
pub async fn cluster_and_bridge(n: usize) -> anyhow::Result<(Cluster, Bridge)> {
    let cluster = Cluster::builder().nodes(n).build().await?;
    let config = cluster.bridge_config()?;
    let bridge = Bridge::start(config, Some(&cluster.nodes[0].kubelet_target())).await?;
    Ok((cluster, bridge))
}

/// Writes `msg` on an open tunnel and expects it echoed back.
pub async fn echo_round_trip(stream: &mut Stream, msg: &[u8]) -> anyhow::Result<()> {
    let io = async {
        stream.write_all(msg).await?;
        let mut back = vec![0u8; msg.len()];
        stream.read_exact(&mut back).await?;
        anyhow::ensure!(back == msg, "echo came back different");
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| anyhow::anyhow!("echo round trip timed out"))?
}

/// Reads until EOF, bounded.
pub async fn read_to_end(stream: &mut Stream, secs: u64) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(secs), stream.read_to_end(&mut out))
        .await
        .map_err(|_| anyhow::anyhow!("no EOF within {secs}s"))??;
    Ok(out)
}
