//! Interop with kube-apiserver: what its clients send, and (with the
//! binaries from scripts/k8s-harness) a real kube-apiserver v1.20.2 whose
//! `cluster` egress runs through the bridge in both proxy protocols, set by
//! the egress selector file `sshbridge manifests egress-selector` generates.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sshbridge::konnectivity::proto::packet::Payload;
use sshbridge::konnectivity::proto::Packet;
use sshbridge_tests::apiserver::https::header;
use sshbridge_tests::apiserver::{
    Answer, ApiKubelet, Binaries, ControlPlane, ProxyProtocol, RawProxyStream,
};
use sshbridge_tests::manifests::generate;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::support::{konnectivity_setup, within, KonnectivitySetup};

/// Bound on each step of the apiserver checks.
const STEP: Duration = Duration::from_secs(20);

/// grpc-go (kube-apiserver's konnectivity-client, upstream's tools) sends
/// the unix socket's path as `:authority`; other clients send nothing or
/// `localhost`. Each must get a working tunnel, not an RST_STREAM (the
/// vendored h2 patch, vendor/README.md).
#[tokio::test]
async fn grpc_egress_serves_the_authorities_real_clients_send() -> anyhow::Result<()> {
    within(90, async {
        let s = konnectivity_setup(1, &[], &[], |_| {}).await?;
        let uds = s.bridge.grpc_uds().expect("grpc_uds configured");
        let echo = s.cluster.nodes[0].echo.addr().to_string();
        let path = uds.to_str().expect("utf-8 socket path").to_string();
        for authority in [path.as_str(), "", "localhost"] {
            let random = 4242;
            let mut stream =
                RawProxyStream::open(uds, authority, &Packet::dial_request(&echo, random)).await?;
            let connect_id = match stream.next().await? {
                Answer::Packet(Packet {
                    payload: Some(Payload::DialResponse(r)),
                    ..
                }) if r.random == random && r.error.is_empty() => r.connect_id,
                other => panic!("authority {authority:?}: expected a good DIAL_RSP, got {other:?}"),
            };
            let msg = format!("through :authority {authority:?}");
            stream
                .send(&Packet::data(connect_id, msg.as_bytes()))
                .await?;
            let mut back = Vec::new();
            while back.len() < msg.len() {
                match stream.next().await? {
                    Answer::Packet(Packet {
                        payload: Some(Payload::Data(d)),
                        ..
                    }) => back.extend_from_slice(&d.data),
                    other => panic!("authority {authority:?}: expected the echo, got {other:?}"),
                }
            }
            assert_eq!(back, msg.as_bytes(), "authority {authority:?}");
        }
        Ok(())
    })
    .await
}

/// A cluster of two nodes on SSH, their kubelet stand-ins, a bridge, and a
/// real kube-apiserver whose `cluster` egress is the bridge in `protocol`.
struct ApiSetup {
    s: KonnectivitySetup,
    kubelets: Vec<ApiKubelet>,
    cp: ControlPlane,
}

async fn api_setup(protocol: ProxyProtocol) -> anyhow::Result<ApiSetup> {
    let bins = Binaries::from_env()?;
    let s = konnectivity_setup(2, &[], &[], |_| {}).await?;
    let mut kubelets = Vec::new();
    for node in &s.cluster.nodes {
        kubelets.push(ApiKubelet::start(&s.cluster.pki, node.address, &node.name).await?);
    }
    let dir = s.cluster.dir.path().join("control-plane");
    std::fs::create_dir_all(&dir)?;
    // The apiserver loads what an operator would install: the egress file
    // `sshbridge manifests egress-selector` generates from the bridge's config.
    let egress = dir.join("egress-selector.yaml");
    let yaml = generate(
        &s.bridge.config.path(),
        &["egress-selector", "--protocol", protocol.flag()],
    )?;
    let socket = match protocol {
        ProxyProtocol::HttpConnect => s.bridge.config.uds.clone(),
        ProxyProtocol::Grpc => s.bridge.grpc_uds().expect("grpc_uds").to_path_buf(),
    };
    let proxy_protocol = match protocol {
        ProxyProtocol::HttpConnect => "HTTPConnect",
        ProxyProtocol::Grpc => "GRPC",
    };
    anyhow::ensure!(
        yaml.contains(&format!("udsName: {:?}\n", socket.display().to_string()))
            && yaml.contains(&format!("proxyProtocol: {proxy_protocol}\n")),
        "the generated egress file must name {proxy_protocol} on {}:\n{yaml}",
        socket.display()
    );
    std::fs::write(&egress, yaml)?;
    let cp = ControlPlane::start(&bins, &s.cluster.pki, &s.cluster.ca_path, &dir, &egress).await?;
    for (i, (node, k)) in s.cluster.nodes.iter().zip(&kubelets).enumerate() {
        cp.register_node(&node.name, node.address, k.addr().port())
            .await?;
        cp.create_pod(&format!("pod-{i}"), &node.name, "app")
            .await?;
    }
    Ok(ApiSetup { s, kubelets, cp })
}

#[tokio::test]
async fn kube_apiserver_in_http_connect_mode_reaches_kubelets_through_the_bridge(
) -> anyhow::Result<()> {
    within(300, apiserver_checks(ProxyProtocol::HttpConnect)).await
}

#[tokio::test]
async fn kube_apiserver_in_grpc_mode_reaches_kubelets_through_the_bridge() -> anyhow::Result<()> {
    within(300, apiserver_checks(ProxyProtocol::Grpc)).await
}

async fn apiserver_checks(protocol: ProxyProtocol) -> anyhow::Result<()> {
    let mut a = api_setup(protocol).await?;
    let result = async {
        logs(&a).await?;
        node_proxy(&a).await?;
        logs_follow(&a).await?;
        exec_and_port_forward(&a).await?;
        dead_node_and_recovery(&mut a, protocol).await
    }
    .await;
    if result.is_err() {
        eprintln!("---- kube-apiserver log tail ----\n{}", a.cp.log_tail(60));
    }
    result
}

/// `kubectl logs`: the apiserver dials node-0's kubelet through the bridge.
async fn logs(a: &ApiSetup) -> anyhow::Result<()> {
    let (ok, out, err) = a.cp.kubectl(&["logs", "pod-0", "-c", "app"]).await?;
    anyhow::ensure!(ok, "kubectl logs failed: {err}");
    let seen = a.kubelets[0]
        .wait_seen("logs request", STEP, |s| {
            s.target.starts_with("/containerLogs/")
        })
        .await?;
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("GET", "/containerLogs/default/pod-0/app")
    );
    assert_eq!(out, a.kubelets[0].log_body(&seen.target));
    Ok(())
}

/// `kubectl get --raw /api/v1/nodes/N/proxy/...` on both nodes.
async fn node_proxy(a: &ApiSetup) -> anyhow::Result<()> {
    for (i, node) in a.s.cluster.nodes.iter().enumerate() {
        let path = format!("/api/v1/nodes/{}/proxy/stats/summary?only_cpu=1", node.name);
        let (ok, out, err) = a.cp.kubectl(&["get", "--raw", &path]).await?;
        anyhow::ensure!(ok, "kubectl get --raw {path} failed: {err}");
        assert_eq!(
            out.trim_end(),
            format!("node={} path=/stats/summary?only_cpu=1", node.name)
        );
        assert!(a.kubelets[i]
            .seen()
            .iter()
            .any(|s| s.target == "/stats/summary?only_cpu=1"));
    }
    Ok(())
}

/// `kubectl logs -f`: each line reaches kubectl's output before the
/// kubelet writes the next one; the stream's end ends kubectl cleanly.
async fn logs_follow(a: &ApiSetup) -> anyhow::Result<()> {
    let kubelet = &a.kubelets[1];
    let mut child =
        a.cp.kubectl_command()
            .args(["logs", "-f", "pod-1", "-c", "app"])
            .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let seen = kubelet
        .wait_seen("follow request", STEP, |s| s.target.contains("follow=true"))
        .await?;
    assert_eq!(seen.target, "/containerLogs/default/pod-1/app?follow=true");
    for i in 1..=3 {
        let line = format!("streamed line {i}");
        kubelet.feed(&line);
        let got = tokio::time::timeout(STEP, lines.next_line())
            .await
            .with_context(|| format!("{line:?} did not arrive within {STEP:?}"))??;
        assert_eq!(got.as_deref(), Some(line.as_str()));
    }
    kubelet.end_follow();
    let rest = tokio::time::timeout(STEP, lines.next_line()).await??;
    assert_eq!(rest, None, "output after the stream ended");
    let status = tokio::time::timeout(STEP, child.wait()).await??;
    assert!(status.success(), "kubectl logs -f ended with {status}");
    Ok(())
}

/// Exec and port-forward are upgrades: the apiserver forwards `Upgrade`
/// to the kubelet, relays its `101`, then splices bytes both ways.
async fn exec_and_port_forward(a: &ApiSetup) -> anyhow::Result<()> {
    let cases = [
        (
            0,
            "/api/v1/namespaces/default/pods/pod-0/exec?command=cat&stdin=true&stdout=true&container=app",
            "node-0 POST /exec/default/pod-0/app?command=cat&input=1&output=1\n",
        ),
        (
            1,
            "/api/v1/namespaces/default/pods/pod-1/portforward",
            "node-1 POST /portForward/default/pod-1\n",
        ),
    ];
    for (i, path, banner) in cases {
        let (head, mut io) = a.cp.api.upgrade("POST", path).await?;
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{path}: {head:?}"
        );
        assert_eq!(
            header(&head, "upgrade").as_deref(),
            Some("SPDY/3.1"),
            "{head:?}"
        );
        let mut first = String::new();
        tokio::time::timeout(STEP, io.read_line(&mut first)).await??;
        assert_eq!(first, banner, "what node {i}'s kubelet was asked");
        let msg = format!("bytes both ways through {path}");
        io.write_all(msg.as_bytes()).await?;
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(STEP, io.read_exact(&mut back)).await??;
        assert_eq!(back, msg.as_bytes());
        // Close sequence: the client's EOF ends the splice, and the
        // apiserver closes the client's connection (no bytes after).
        io.shutdown().await?;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(STEP, io.read_to_end(&mut rest)).await?;
        assert!(rest.is_empty(), "{path}: bytes after close: {rest:?}");
    }
    // Without an upgrade the apiserver refuses before dialing anything.
    let path = "/api/v1/namespaces/default/pods/pod-0/exec?command=cat&stdout=true";
    let r = a.cp.api.request("POST", path, None).await?;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body
            .contains(r#""message":"Upgrade request required","reason":"BadRequest","code":400"#),
        "{r:?}"
    );
    Ok(())
}

/// A node whose sshd dies (with its sessions: the apiserver's kept-alive
/// kubelet connection dies too) fails fast, within the bridge's
/// `dial_timeout`, without disturbing the other node; once sshd is back
/// the same apiserver reaches it again by itself.
async fn dead_node_and_recovery(a: &mut ApiSetup, protocol: ProxyProtocol) -> anyhow::Result<()> {
    let dial_timeout =
        a.s.bridge
            .config
            .dial_timeout
            .strip_suffix('s')
            .map(str::parse);
    let dial_timeout = Duration::from_secs(dial_timeout.context("dial_timeout in seconds")??);
    a.s.cluster.nodes[1].sshd.kill();
    let path = "/api/v1/nodes/node-1/proxy/healthz";
    let start = Instant::now();
    let (ok, out, err) = a.cp.kubectl(&["get", "--raw", path]).await?;
    let took = start.elapsed();
    assert!(!ok, "a dead node answered: {out}");
    assert!(
        took < dial_timeout + Duration::from_secs(5),
        "failing took {took:?} (dial_timeout {dial_timeout:?})"
    );
    // What the operator sees: HTTPConnect shows only the bridge's status
    // line; GRPC shows the bridge's DIAL_RSP error text verbatim.
    let node1 = &a.s.cluster.nodes[1];
    // GRPC: which of the two bridge errors the dial meets depends on whether
    // the tunnel's first reconnect (refused) has happened yet.
    let messages = match protocol {
        ProxyProtocol::HttpConnect => vec![format!(
            "error trying to reach service: proxy error from {} while dialing {}, code 503: \
             503 Service Unavailable",
            a.s.bridge.config.uds.display(),
            a.kubelets[1].addr()
        )],
        ProxyProtocol::Grpc => vec![
            format!(
                "error trying to reach service: node node-1: path ssh is unavailable: \
                 node node-1: TCP connection to {} refused; check that sshd runs and listens there",
                node1.sshd.addr()
            ),
            format!(
                "error trying to reach service: node node-1: path ssh is unavailable: \
                 node node-1: SSH session with {} was lost: early eof; reconnecting",
                node1.sshd.addr()
            ),
        ],
    };
    assert!(
        messages
            .iter()
            .any(|m| err == format!("Error from server: {m}\n")),
        "unexpected error for a dead node: {err:?}, expected one of {messages:?}"
    );
    // The apiserver maps any failed dial to 500, the dial error as message.
    let r = a.cp.api.request("GET", path, None).await?;
    assert!(
        r.head.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{r:?}"
    );
    assert!(
        messages.iter().any(|m| r.body.ends_with(&format!(
            r#""status":"Failure","message":"{m}","code":500}}{}"#,
            "\n"
        ))),
        "{r:?}"
    );
    let r =
        a.cp.api
            .request("GET", "/api/v1/nodes/node-0/proxy/healthz", None)
            .await?;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ok"),
        "node-0 during node-1's outage"
    );

    a.s.cluster.nodes[1].sshd.restart().await?;
    let start = Instant::now();
    loop {
        let r = a.cp.api.request("GET", path, None).await?;
        if r.status == 200 && r.body == "ok" {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "node-1 not back through the same apiserver within 60s: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A node that hangs (sshd stopped, TCP up): the bridge's keepalive
    // ends the session and its tunnels, so the apiserver's kept-alive
    // kubelet connection ends too, and the request fails in bounded time.
    a.s.cluster.nodes[1].sshd.freeze();
    let start = Instant::now();
    let r = a.cp.api.request("GET", path, None).await;
    let took = start.elapsed();
    a.s.cluster.nodes[1].sshd.thaw();
    let r = r?;
    assert!(
        took < dial_timeout + Duration::from_secs(5),
        "failing on a hung node took {took:?} (dial_timeout {dial_timeout:?}): {r:?}"
    );
    assert_eq!(r.status, 500, "{r:?}");
    let why = match protocol {
        ProxyProtocol::HttpConnect => "code 503: 503 Service Unavailable",
        ProxyProtocol::Grpc => "node node-1: path ssh is unavailable: node node-1: SSH session",
    };
    assert!(r.body.contains(why), "{r:?}");
    Ok(())
}
