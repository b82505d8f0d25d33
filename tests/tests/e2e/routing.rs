//! Routing and the CONNECT frontend's answers, as kube-apiserver sees them.

use sshbridge_tests::kubelet_get;

use crate::support::{cluster_and_bridge, echo_round_trip, within};

#[tokio::test]
async fn each_node_is_reached_through_its_own_tunnel_by_address_and_by_name() -> anyhow::Result<()>
{
    within(90, async {
        let (cluster, bridge) = cluster_and_bridge(3).await?;
        let tls = cluster.kubelet_client_tls()?;
        for node in &cluster.nodes {
            for target in [node.kubelet_target(), node.kubelet_target_by_name()] {
                let c = bridge.egress().connect(&target).await?;
                assert_eq!(c.status, 200, "CONNECT {target}: {c:?}");
                let (status, body) =
                    kubelet_get(c.stream, tls.clone(), node.address, "/pods").await?;
                assert_eq!(status, 200);
                assert_eq!(
                    body,
                    format!("node={} path=/pods\n", node.name),
                    "CONNECT {target} reached the wrong node"
                );
            }
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn pod_addresses_route_to_the_node_owning_their_cidr() -> anyhow::Result<()> {
    within(90, async {
        let (cluster, bridge) = cluster_and_bridge(3).await?;
        // Each node's sshd permits only its own pod address, so a pod
        // dialed through the wrong node fails here with 502.
        for node in &cluster.nodes {
            let target = node.echo.addr().to_string();
            let mut c = bridge.egress().connect(&target).await?;
            assert_eq!(
                c.status, 200,
                "CONNECT {target} (pod of {}): {c:?}",
                node.name
            );
            echo_round_trip(&mut c.stream, format!("to {}", node.name).as_bytes()).await?;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn destinations_outside_nodes_pods_and_services_are_403() -> anyhow::Result<()> {
    within(60, async {
        let (_cluster, bridge) = cluster_and_bridge(1).await?;
        for target in [
            "127.0.0.1:22",
            "127.254.254.254:80",
            "kubernetes.default:443",
        ] {
            let c = bridge.egress().connect(target).await?;
            assert_eq!(
                c.status, 403,
                "the bridge must not be an open proxy: CONNECT {target}: {c:?}"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn ipv6_literal_target_is_parsed_and_refused_by_routing() -> anyhow::Result<()> {
    within(60, async {
        let (_cluster, bridge) = cluster_and_bridge(1).await?;
        // ::1 belongs to no node: a parsed target yields 403; a parser that
        // choked on the brackets would answer 400.
        let c = bridge.egress().connect("[::1]:10250").await?;
        assert_eq!(c.status, 403, "CONNECT [::1]:10250: {c:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn non_connect_methods_are_405_and_garbage_is_400() -> anyhow::Result<()> {
    within(60, async {
        let (cluster, bridge) = cluster_and_bridge(1).await?;
        let target = cluster.nodes[0].kubelet_target();
        let get = format!("GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\n\r\n");
        let c = bridge.egress().request(get.as_bytes()).await?;
        assert_eq!(c.status, 405, "GET: {c:?}");
        let c = bridge
            .egress()
            .request(b"\x16\x03\x01 this is not http\r\n\r\n")
            .await?;
        assert_eq!(c.status, 400, "garbage: {c:?}");
        let c = bridge
            .egress()
            .request(b"CONNECT nonsense HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        assert_eq!(c.status, 400, "target without a port: {c:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_dial_the_node_refuses_is_502() -> anyhow::Result<()> {
    within(60, async {
        let (cluster, bridge) = cluster_and_bridge(1).await?;
        let node = &cluster.nodes[0];
        // Inside the node's pod CIDR, but its sshd's PermitOpen refuses it.
        let target = format!("{}:80", node.denied_pod_ip);
        let c = bridge.egress().connect(&target).await?;
        assert_eq!(c.status, 502, "CONNECT {target}: {c:?}");
        // The node's own address, on a port nothing listens on.
        let closed = sshbridge_tests::net::free_port(node.address)?;
        let target = format!("{}:{closed}", node.address);
        let c = bridge.egress().connect(&target).await?;
        assert_eq!(c.status, 502, "CONNECT {target}: {c:?}");
        // The tunnel itself is fine afterwards.
        let c = bridge.egress().connect(&node.kubelet_target()).await?;
        assert_eq!(c.status, 200);
        Ok(())
    })
    .await
}
