//! The budget on real TLS over in-memory pipes: slots, timeout, counters.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::*;
use sshbridge_sim::pki::Pki;

const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1);

#[tokio::test]
async fn a_full_budget_refuses_at_once_and_stalled_handshakes_time_out() {
    let pki = Pki::new("handshake test").unwrap();
    let pair = pki
        .issue_server(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], &[])
        .unwrap();
    let acceptor = TlsAcceptor::from(pki.server_config(&pair).unwrap());
    let (refused_total, timeouts_total) =
        (Arc::new(Counter::default()), Arc::new(Counter::default()));
    let counters = (refused_total.clone(), timeouts_total.clone());
    let limit = HandshakeLimit::new("egress", 2, Duration::from_millis(300), counters);
    // Two clients that connect and never say hello hold both slots.
    let mut stalled = Vec::new();
    let mut idle_clients = Vec::new();
    for _ in 0..2 {
        let (client, server) = tokio::io::duplex(16 * 1024);
        idle_clients.push(client);
        let (limit, acceptor) = (limit.clone(), acceptor.clone());
        stalled.push(tokio::spawn(async move {
            limit.accept(&acceptor, server, PEER).await.is_some()
        }));
    }
    tokio::task::yield_now().await;
    // A third is refused at once, without waiting for a slot.
    let (_c, server) = tokio::io::duplex(16 * 1024);
    let refused = tokio::time::timeout(
        Duration::from_millis(100),
        limit.accept(&acceptor, server, PEER),
    )
    .await
    .expect("refused at once, not queued");
    assert!(refused.is_none());
    for h in stalled {
        assert!(!tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .unwrap()
            .unwrap());
    }
    // Slots are free again: a real client gets through.
    let (client, server) = tokio::io::duplex(16 * 1024);
    let connector = TlsConnector::from(pki.client_config(None).unwrap());
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let (c, s) = tokio::join!(
        connector.connect(name, client),
        limit.accept(&acceptor, server, PEER)
    );
    assert!(c.is_ok() && s.is_some());
    assert_eq!(refused_total.get(), 1);
    assert_eq!(timeouts_total.get(), 2);
}
