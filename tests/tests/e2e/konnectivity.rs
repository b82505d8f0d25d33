//! The Konnectivity path end to end: real `sshbridge agent` processes, the
//! daemon's agent server with mTLS, both egress frontends (HTTP CONNECT and
//! gRPC), route switches by SIGHUP, agents that die and come back.

use std::time::Duration;

use sshbridge::report::PathState;
use sshbridge_config::Route;
use sshbridge_tests::{
    dials_ok, konnectivity_state, kubelet_get, net, sha256_hex, Agent, Bridge, GrpcEgress, Stream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{echo_round_trip, konnectivity_setup, kubelet_via_connect, within};

/// Bound for a path to come up (agent reconnect + one probe) on a busy box.
const UP: Duration = Duration::from_secs(30);

fn grpc(bridge: &Bridge) -> anyhow::Result<GrpcEgress> {
    let uds = bridge
        .grpc_uds()
        .ok_or_else(|| anyhow::anyhow!("bridge has no grpc_uds"))?;
    Ok(GrpcEgress::new(uds))
}

/// Expects `stream` to end (EOF or error) within `secs`, discarding data.
async fn ends_within(stream: &mut Stream, secs: u64) -> anyhow::Result<()> {
    let drain = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(secs), drain)
        .await
        .map_err(|_| anyhow::anyhow!("the stream stayed open for {secs}s"))
}

#[tokio::test]
async fn connect_and_grpc_dials_reach_the_right_node_over_konnectivity() -> anyhow::Result<()> {
    within(120, async {
        let s = konnectivity_setup(2, &[0, 1], &[0, 1], |_| {}).await?;
        let (cluster, bridge) = (&s.cluster, &s.bridge);
        let before = bridge.report().await?;
        let grpc = grpc(bridge)?;
        let tls = cluster.kubelet_client_tls()?;
        for (i, node) in cluster.nodes.iter().enumerate() {
            kubelet_via_connect(bridge, cluster, i).await?;
            // By name: dialed at the node's address, through its agent.
            let stream = grpc
                .dial(&node.kubelet_target_by_name())
                .await?
                .map_err(|e| anyhow::anyhow!("gRPC dial of {} failed: {e}", node.name))?;
            let (status, body) = kubelet_get(stream, tls.clone(), node.address, "/logs").await?;
            assert_eq!(
                (status, body.as_str()),
                (200, format!("node={} path=/logs\n", node.name).as_str())
            );
        }
        let after = bridge.report().await?;
        for node in &cluster.nodes {
            let (ssh0, k0) = dials_ok(&before, &node.name);
            let (ssh1, k1) = dials_ok(&after, &node.name);
            assert!(
                k1 >= k0 + 2,
                "{}: konnectivity dials {k0} -> {k1}, expected both dials there",
                node.name
            );
            assert_eq!(ssh0, ssh1, "{}: no stream may have used ssh", node.name);
            let n = after.nodes.iter().find(|n| n.name == node.name).unwrap();
            assert_eq!(n.route, Route::Konnectivity);
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_sighup_route_switch_moves_new_streams_and_keeps_open_ones() -> anyhow::Result<()> {
    within(150, async {
        let mut s = konnectivity_setup(1, &[], &[0], |_| {}).await?;
        let node = &s.cluster.nodes[0];
        let echo = node.echo.addr().to_string();
        let egress = s.bridge.egress();
        let mut on_ssh = egress.connect(&echo).await?;
        assert_eq!(on_ssh.status, 200, "{on_ssh:?}");
        echo_round_trip(&mut on_ssh.stream, b"before the switch").await?;

        let mut k = s.bridge.konnectivity.clone().unwrap();
        k.route(&node.name, Route::Konnectivity);
        s.bridge.konnectivity = Some(k);
        s.bridge.rewrite_config(s.bridge.config.clone())?;
        s.bridge.sighup()?;
        let name = node.name.clone();
        s.bridge
            .wait_for_report("route konnectivity", UP, |r| {
                r.nodes[0].name == name && r.nodes[0].route == Route::Konnectivity
            })
            .await?;
        let before = dials_ok(&s.bridge.report().await?, &name);
        let mut on_k = egress.connect(&echo).await?;
        assert_eq!(on_k.status, 200, "{on_k:?}");
        echo_round_trip(&mut on_k.stream, b"over konnectivity").await?;
        echo_round_trip(&mut on_ssh.stream, b"old stream still on ssh").await?;
        let after = dials_ok(&s.bridge.report().await?, &name);
        assert_eq!(
            (after.0, after.1),
            (before.0, before.1 + 1),
            "the new stream must be dialed over konnectivity, and only it"
        );

        // Proof by failure: without the agent the konnectivity stream ends,
        // the ssh stream opened before the switch does not.
        s.agents[0].as_mut().unwrap().kill().await?;
        ends_within(&mut on_k.stream, 10).await?;
        echo_round_trip(&mut on_ssh.stream, b"ssh does not care").await?;

        // And back: new streams use ssh again, agent or not.
        let mut k = s.bridge.konnectivity.clone().unwrap();
        k.route(&name, Route::Ssh);
        s.bridge.konnectivity = Some(k);
        s.bridge.rewrite_config(s.bridge.config.clone())?;
        s.bridge.sighup()?;
        s.bridge.wait_for_status(&echo, 200, UP).await?;
        let mut again = egress.connect(&echo).await?;
        assert_eq!(again.status, 200, "{again:?}");
        echo_round_trip(&mut again.stream, b"back on ssh").await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_killed_agent_ends_its_streams_and_503s_until_it_returns() -> anyhow::Result<()> {
    within(150, async {
        let mut s = konnectivity_setup(2, &[0, 1], &[0, 1], |_| {}).await?;
        let egress = s.bridge.egress();
        let echo0 = s.cluster.nodes[0].echo.addr().to_string();
        let echo1 = s.cluster.nodes[1].echo.addr().to_string();
        let mut a = egress.connect(&echo0).await?;
        let mut b = egress.connect(&echo1).await?;
        assert_eq!((a.status, b.status), (200, 200));
        echo_round_trip(&mut a.stream, b"node-0").await?;
        echo_round_trip(&mut b.stream, b"node-1").await?;

        s.agents[0].as_mut().unwrap().kill().await?;
        ends_within(&mut a.stream, 10).await?;
        echo_round_trip(&mut b.stream, b"node-1 is not affected").await?;

        let refused = egress.connect(&echo0).await?;
        assert_eq!(refused.status, 503, "{refused:?}");
        assert!(
            refused.body.contains("node-0") && refused.body.to_lowercase().contains("agent"),
            "a 503 must name the node and the missing agent: {:?}",
            refused.body
        );
        let grpc_refused = grpc(&s.bridge)?.dial(&echo0).await?;
        let err = grpc_refused.err().expect("gRPC dial without an agent");
        assert!(err.contains("node-0"), "{err}");

        s.agents[0].as_mut().unwrap().restart().await?;
        s.bridge.wait_for_konnectivity("node-0", UP).await?;
        let mut c = egress.connect(&echo0).await?;
        assert_eq!(c.status, 200, "{c:?}");
        echo_round_trip(&mut c.stream, b"agent is back").await?;
        kubelet_via_connect(&s.bridge, &s.cluster, 0).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_unreachable_target_answers_502_with_the_agents_error() -> anyhow::Result<()> {
    within(120, async {
        let s = konnectivity_setup(1, &[0], &[0], |_| {}).await?;
        let node = &s.cluster.nodes[0];
        // A port on the node's address where nothing listens.
        let closed = format!("{}:{}", node.address, net::free_port(node.address)?);
        let c = s.bridge.egress().connect(&closed).await?;
        assert_eq!(c.status, 502, "{c:?}");
        let body = c.body.to_lowercase();
        assert!(
            body.contains("node-0") && body.contains("refused"),
            "the 502 must carry the agent's dial error: {:?}",
            c.body
        );
        let err = grpc(&s.bridge)?
            .dial(&closed)
            .await?
            .err()
            .expect("gRPC dial of a closed port");
        assert!(err.to_lowercase().contains("refused"), "{err}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_agent_without_a_client_certificate_is_refused() -> anyhow::Result<()> {
    within(120, async {
        let s = konnectivity_setup(1, &[0], &[], |_| {}).await?;
        let k = s.bridge.konnectivity.clone().unwrap();
        let node = &s.cluster.nodes[0];
        let mut spec = s.cluster.agent_spec(&k, node);
        spec.identity = None;
        spec.agent_id = "agent-without-cert".into();
        let mut rogue = Agent::start(spec).await?;
        // The agent retries every few hundred ms; give it several tries.
        let bridge = &s.bridge;
        let tried = async {
            while rogue
                .log()
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                .count()
                < 2
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(15), tried)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the agent never reported a failed connect:\n{}",
                    rogue.log_tail(20)
                )
            })?;
        assert!(rogue.is_running(), "the agent keeps retrying");
        let report = bridge.report().await?;
        assert_ne!(konnectivity_state(&report, "node-0"), PathState::Up);
        let c = bridge.egress().connect(&node.kubelet_target()).await?;
        assert_eq!(
            c.status, 503,
            "an agent without a client cert must not serve: {c:?}"
        );
        // The same agent with the certificate is accepted: it was the cert.
        let mut good = s.cluster.start_agent(&k, node).await?;
        bridge.wait_for_konnectivity("node-0", UP).await?;
        kubelet_via_connect(bridge, &s.cluster, 0).await?;
        good.kill().await?;
        rogue.kill().await?;
        Ok(())
    })
    .await
}

/// `len` bytes that differ per stream.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn two_hundred_concurrent_streams_keep_their_bytes_over_konnectivity() -> anyhow::Result<()> {
    within(180, async {
        let s = konnectivity_setup(2, &[0, 1], &[0, 1], |_| {}).await?;
        let egress = s.bridge.egress();
        let grpc = grpc(&s.bridge)?;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200u64 {
            let target = s.cluster.nodes[(i % 2) as usize].echo.addr().to_string();
            let (egress, grpc) = (egress.clone(), grpc.clone());
            tasks.spawn(async move {
                let mut stream = if i % 4 < 2 {
                    let c = egress.connect(&target).await?;
                    anyhow::ensure!(c.status == 200, "stream {i}: {c:?}");
                    c.stream
                } else {
                    grpc.dial(&target)
                        .await?
                        .map_err(|e| anyhow::anyhow!("stream {i}: gRPC dial: {e}"))?
                };
                let data = payload(i, 64 * 1024 + i as usize * 97);
                let want = sha256_hex(&data);
                let (mut r, mut w) = tokio::io::split(&mut stream);
                let write = async {
                    for chunk in data.chunks(7 * 1024) {
                        w.write_all(chunk).await?;
                    }
                    Ok::<_, std::io::Error>(())
                };
                let read = async {
                    let mut back = vec![0u8; data.len()];
                    r.read_exact(&mut back).await?;
                    Ok::<_, std::io::Error>(back)
                };
                let (wrote, back) = tokio::join!(write, read);
                wrote?;
                let got = sha256_hex(&back?);
                anyhow::ensure!(got == want, "stream {i}: checksum {got} != {want}");
                Ok(())
            });
        }
        let all = async {
            let mut failed = Vec::new();
            while let Some(r) = tasks.join_next().await {
                if let Err(e) = r? {
                    failed.push(format!("{e:#}"));
                }
            }
            Ok::<_, anyhow::Error>(failed)
        };
        let failed = tokio::time::timeout(Duration::from_secs(90), all)
            .await
            .map_err(|_| anyhow::anyhow!("200 streams did not finish within 90s"))??;
        assert!(
            failed.is_empty(),
            "{} of 200 streams failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        let r = s.bridge.report().await?;
        let k: u64 = ["node-0", "node-1"].iter().map(|n| dials_ok(&r, n).1).sum();
        assert!(
            k >= 200,
            "only {k} konnectivity dials counted for 200 streams"
        );
        Ok(())
    })
    .await
}
