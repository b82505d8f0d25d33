//! Data integrity, half-close, and isolation of a slow reader.

use std::time::Duration;

use rand::RngCore;
use sshbridge_tests::{sha256_hex, Bridge, Cluster, Egress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{cluster_and_bridge, echo_round_trip, read_to_end, within};

const MIB: usize = 1024 * 1024;

/// Sends `data` to a pod server and checks what comes back: the echo for
/// an echo server, the hash for a hash server.
async fn one_stream(
    egress: Egress,
    target: String,
    data: Vec<u8>,
    echo: bool,
) -> anyhow::Result<()> {
    let c = egress.connect(&target).await?;
    anyhow::ensure!(c.status == 200, "CONNECT {target}: {c:?}");
    let (mut r, mut w) = tokio::io::split(c.stream);
    let writer = async {
        w.write_all(&data).await?;
        w.shutdown().await?;
        Ok::<_, std::io::Error>(())
    };
    let reader = async {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await?;
        Ok::<_, std::io::Error>(back)
    };
    let (wrote, back) = tokio::join!(writer, reader);
    wrote?;
    let back = back?;
    if echo {
        anyhow::ensure!(
            back.len() == data.len(),
            "echo returned {} of {} bytes",
            back.len(),
            data.len()
        );
        anyhow::ensure!(
            sha256_hex(&back) == sha256_hex(&data),
            "echoed bytes differ"
        );
    } else {
        anyhow::ensure!(
            back == sha256_hex(&data).as_bytes(),
            "the pod received different bytes"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_2mib_streams_arrive_intact() -> anyhow::Result<()> {
    within(300, async {
        let (cluster, bridge) = cluster_and_bridge(2).await?;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let node = &cluster.nodes[i % 2];
            let echo = i % 4 < 2;
            let target = if echo {
                node.echo.addr()
            } else {
                node.hash.addr()
            }
            .to_string();
            let mut data = vec![0u8; 2 * MIB + i];
            rand::thread_rng().fill_bytes(&mut data);
            tasks.spawn(one_stream(bridge.egress(), target, data, echo));
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn half_close_works_in_both_directions() -> anyhow::Result<()> {
    within(60, async {
        let (cluster, bridge) = cluster_and_bridge(1).await?;
        let node = &cluster.nodes[0];
        // Client closes first: the pod sees EOF and can still answer.
        one_stream(
            bridge.egress(),
            node.hash.addr().to_string(),
            b"client half-close".to_vec(),
            false,
        )
        .await?;
        // Pod closes first: the client sees EOF and can still send.
        let mut c = bridge
            .egress()
            .connect_server_speaks_first(&node.close_first.addr().to_string())
            .await?;
        assert_eq!(c.status, 200);
        assert_eq!(read_to_end(&mut c.stream, 10).await?, b"bye\n");
        let late = b"written after the pod closed its side";
        c.stream.write_all(late).await?;
        c.stream.shutdown().await?;
        let want = sha256_hex(late);
        let recorded = async {
            while !node.close_first.received().contains(&want) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), recorded)
            .await
            .map_err(|_| anyhow::anyhow!("the pod never received the bytes sent after its EOF"))?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_reset_without_stalling_its_node() -> anyhow::Result<()> {
    within(120, async {
        let cluster = Cluster::builder().nodes(1).build().await?;
        let node = &cluster.nodes[0];
        let mut config = cluster.bridge_config()?;
        config.max_stream_buffer = "1MiB".into();
        let bridge = Bridge::start(config, Some(&node.kubelet_target())).await?;
        // A stream whose client never reads, fed by an endless writer.
        let mut stuck = bridge
            .egress()
            .connect_server_speaks_first(&node.firehose.addr().to_string())
            .await?;
        assert_eq!(stuck.status, 200);
        // Another stream on the same node keeps moving 16 MiB. Upload
        // only: the SSH window paces it, so its own buffer stays empty and
        // only a stalled session could stop it.
        let mut data = vec![0u8; 16 * MIB];
        rand::thread_rng().fill_bytes(&mut data);
        tokio::time::timeout(
            Duration::from_secs(60),
            one_stream(bridge.egress(), node.hash.addr().to_string(), data, false),
        )
        .await
        .map_err(|_| anyhow::anyhow!("a stalled reader stalled the node's other stream"))??;
        // The stuck stream was reset: reading it now ends, after no more
        // than what sat in buffers, instead of an endless firehose.
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        let drained = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match stuck.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
                if got > 64 * MIB {
                    return;
                }
            }
        })
        .await;
        assert!(
            drained.is_ok() && got <= 64 * MIB,
            "the slow stream was never reset ({got} bytes read)"
        );
        // And the tunnel is still up.
        let mut c = bridge
            .egress()
            .connect(&node.echo.addr().to_string())
            .await?;
        assert_eq!(c.status, 200);
        echo_round_trip(&mut c.stream, b"still here").await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_large_stream_arrives_intact_both_ways() -> anyhow::Result<()> {
    within(120, async {
        let (cluster, bridge) = cluster_and_bridge(1).await?;
        let node = &cluster.nodes[0];
        let mut data = vec![0u8; 8 * MIB];
        rand::thread_rng().fill_bytes(&mut data);
        one_stream(
            bridge.egress(),
            node.hash.addr().to_string(),
            data.clone(),
            false,
        )
        .await?;
        one_stream(bridge.egress(), node.echo.addr().to_string(), data, true).await?;
        Ok(())
    })
    .await
}
