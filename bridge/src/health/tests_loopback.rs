//! Real TLS on loopback: the sim kubelet with certificates from the right
//! CA, another CA, and without the node address as IP SAN.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::*;
use sshbridge_sim::kubelet::Kubelet;
use sshbridge_sim::pki::Pki;

/// Dials the kubelet directly over loopback TCP.
struct DirectDial(AtomicU64);

impl ProbeDial for DirectDial {
    fn dial(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = Result<BoxStream, DialError>> + Send {
        self.0.fetch_add(1, Ordering::Relaxed);
        let target = format!("{host}:{port}");
        async move {
            let stream = TcpStream::connect(&target)
                .await
                .map_err(|e| DialError::Refused {
                    node: "node-a".into(),
                    target,
                    reason: e.to_string(),
                })?;
            Ok(Box::new(stream) as BoxStream)
        }
    }
}

/// A real kubelet stand-in on 127.0.0.1 with a certificate for `sans` from
/// `issuer`, probed with settings built from a `[health]` trusting `trusted`.
async fn probe_real(issuer: &Pki, trusted: &Pki, sans: &[IpAddr], want: PathState) -> PathHealth {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let listener = TcpListener::bind((loopback, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pair = issuer.issue_server(sans, &["node-a"]).unwrap();
    let kubelet = Kubelet::start(
        listener,
        "node-a".into(),
        issuer.server_config(&pair).unwrap(),
        shutdown.clone(),
    )
    .unwrap();
    let cfg = sshbridge_config::Health {
        interval: Duration::from_millis(500),
        kubelet_port: port,
        kubelet_path: "/healthz".into(),
        kubelet_ca: Some(trusted.write_ca(dir.path()).unwrap()),
        down_after: 1,
        up_after: 2,
    };
    let settings = ProbeSettings::from_config(&cfg).unwrap();
    assert_eq!(
        settings.timeout,
        Duration::from_millis(500),
        "timeout is min(interval, 5s)"
    );
    let live = watch::Sender::new(true);
    let dial = DirectDial(AtomicU64::new(0));
    let h = Prober::spawn(
        "node-a".into(),
        loopback,
        sshbridge_core::PathKind::Ssh,
        dial,
        live.subscribe(),
        settings,
        Duration::ZERO,
        shutdown.clone(),
        &crate::tasks::Tasks::new(),
    );
    let mut rx = h.subscribe();
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| *s == want))
        .await
        .unwrap_or_else(|_| panic!("never reached {want}: {:?}", h.snapshot()))
        .unwrap();
    let snap = h.snapshot();
    if want == PathState::Up {
        assert!(
            kubelet.requests() >= 2,
            "the kubelet must have answered the probes"
        );
    }
    shutdown.cancel();
    snap
}

#[tokio::test]
async fn real_tls_probe_with_the_right_ca_is_up() {
    let pki = Pki::new("kubelet-ca").unwrap();
    let snap = probe_real(
        &pki,
        &pki,
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        PathState::Up,
    )
    .await;
    assert!(
        snap.probes_ok >= 2 && snap.latency_p99_ms.is_some(),
        "{snap:?}"
    );
    assert!(snap.target.to_string().starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn real_tls_probe_names_an_unknown_issuer() {
    let (kubelet_ca, other_ca) = (
        Pki::new("kubelet-ca").unwrap(),
        Pki::new("other-ca").unwrap(),
    );
    let snap = probe_real(
        &other_ca,
        &kubelet_ca,
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        PathState::Down,
    )
    .await;
    let err = snap.last_error.unwrap();
    let want = format!(
        "probe of node-a ({}) over ssh failed: TLS: invalid peer certificate: UnknownIssuer \
         (is health.kubelet_ca the CA that signed the kubelet's serving certificate?)",
        snap.target
    );
    assert_eq!(err, want);
}

#[tokio::test]
async fn real_tls_probe_needs_the_node_address_as_ip_san() {
    let pki = Pki::new("kubelet-ca").unwrap();
    let snap = probe_real(
        &pki,
        &pki,
        &[IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))],
        PathState::Down,
    )
    .await;
    let err = snap.last_error.unwrap();
    assert!(
        err.contains("TLS: invalid peer certificate: certificate not valid for name"),
        "{err}"
    );
    assert!(
        err.contains("must carry the node address as an IP SAN"),
        "{err}"
    );
}
