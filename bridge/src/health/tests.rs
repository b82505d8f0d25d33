//! Prober tests: the state machine and its timing on paused time with an
//! in-memory TLS kubelet, and real TLS on loopback with the sim kubelet.

use std::net::Ipv4Addr;
use std::sync::Mutex as StdMutex;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::*;
use sshbridge_sim::pki::Pki;

/// Bound on every wait; on paused time it is virtual.
const T: Duration = Duration::from_secs(120);
const NODE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// A TLS kubelet answering with this status.
    Serve(u16),
    /// The path refuses the dial.
    Refuse,
    /// The stream opens and nothing ever answers.
    Hang,
}

/// A path that serves an in-memory kubelet, so paused time stays exact.
#[derive(Clone)]
struct FakeDial {
    mode: Arc<StdMutex<Mode>>,
    server: Arc<rustls::ServerConfig>,
    dials: mpsc::UnboundedSender<Instant>,
}

impl FakeDial {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

impl ProbeDial for FakeDial {
    fn dial(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = Result<BoxStream, DialError>> + Send {
        let mode = *self.mode.lock().unwrap();
        let _ = self.dials.send(Instant::now());
        let (server, target) = (self.server.clone(), format!("{host}:{port}"));
        async move {
            let (client, far) = tokio::io::duplex(64 * 1024);
            match mode {
                Mode::Refuse => {
                    return Err(DialError::Refused {
                        node: "node-a".into(),
                        target,
                        reason: "connection refused".into(),
                    })
                }
                Mode::Hang => drop(tokio::spawn(async move {
                    let _far = far;
                    std::future::pending::<()>().await
                })),
                Mode::Serve(code) => drop(tokio::spawn(serve(far, server, code))),
            }
            Ok(Box::new(client) as BoxStream)
        }
    }
}

async fn serve(
    io: tokio::io::DuplexStream,
    server: Arc<rustls::ServerConfig>,
    code: u16,
) -> std::io::Result<()> {
    let mut tls = BufReader::new(TlsAcceptor::from(server).accept(io).await?);
    let mut line = String::new();
    while tls.read_line(&mut line).await? > 0 && !line.ends_with("\r\n\r\n") {}
    let head = format!("HTTP/1.1 {code} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    tls.write_all(head.as_bytes()).await?;
    tls.shutdown().await
}

struct Fixture {
    dial: FakeDial,
    dials: mpsc::UnboundedReceiver<Instant>,
    settings: ProbeSettings,
    live: watch::Sender<bool>,
    shutdown: CancellationToken,
}

fn fixture(up_after: u32, down_after: u32) -> Fixture {
    let pki = Pki::new("kubelet-ca").unwrap();
    let pair = pki.issue_server(&[NODE_IP], &["node-a"]).unwrap();
    let (tx, dials) = mpsc::unbounded_channel();
    let dial = FakeDial {
        mode: Arc::new(StdMutex::new(Mode::Serve(200))),
        server: pki.server_config(&pair).unwrap(),
        dials: tx,
    };
    let settings = ProbeSettings {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
        kubelet_port: 10250,
        kubelet_path: "/healthz".into(),
        tls: Some(pki.client_config(None).unwrap()),
        down_after,
        up_after,
        events: None,
    };
    Fixture {
        dial,
        dials,
        settings,
        live: watch::Sender::new(true),
        shutdown: CancellationToken::new(),
    }
}

impl Fixture {
    fn spawn(&self, phase: Duration) -> ProbeHandle {
        Prober::spawn(
            "node-a".into(),
            NODE_IP,
            sshbridge_core::PathKind::Ssh,
            self.dial.clone(),
            self.live.subscribe(),
            self.settings.clone(),
            phase,
            self.shutdown.clone(),
            &crate::tasks::Tasks::new(),
        )
    }
}

/// Waits for `state`; returns the (virtual) time it took.
async fn reach(h: &ProbeHandle, state: PathState) -> Duration {
    let start = Instant::now();
    let mut rx = h.subscribe();
    tokio::time::timeout(T, rx.wait_for(|s| *s == state))
        .await
        .unwrap_or_else(|_| panic!("never reached {state}; now {:?}", h.snapshot()))
        .unwrap();
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn probes_drive_up_degraded_down_and_back_on_schedule() {
    let f = fixture(2, 3);
    let h = f.spawn(Duration::ZERO);
    assert_eq!(h.state(), PathState::Unknown);
    // Probes at 0s and 10s: up after the second.
    assert_eq!(reach(&h, PathState::Up).await, Duration::from_secs(10));
    let snap = h.snapshot();
    assert_eq!((snap.probes_ok, snap.probes_failed), (2, 0));
    assert!(snap.latency_p50_ms.is_some() && snap.last_error.is_none());

    f.dial.set(Mode::Refuse);
    assert_eq!(
        reach(&h, PathState::Degraded).await,
        Duration::from_secs(10)
    );
    assert_eq!(
        reach(&h, PathState::Down).await,
        Duration::from_secs(20),
        "down after the third failure"
    );
    let snap = h.snapshot();
    assert_eq!(snap.consecutive_failures, 3);
    assert_eq!((snap.window_failures, snap.window_size), (3, 5));
    let err = snap.last_error.unwrap();
    assert!(
        err.starts_with("probe of node-a (10.0.0.5:10250) over ssh failed: dial: ")
            && err.contains("connection refused"),
        "{err}"
    );

    f.dial.set(Mode::Serve(200));
    assert_eq!(reach(&h, PathState::Up).await, Duration::from_secs(20));
    f.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn lost_transport_is_down_at_once_and_stops_probing() {
    let mut f = fixture(2, 3);
    let h = f.spawn(Duration::ZERO);
    reach(&h, PathState::Up).await;
    while f.dials.try_recv().is_ok() {}

    f.live.send_replace(false);
    assert_eq!(
        reach(&h, PathState::Down).await,
        Duration::ZERO,
        "no waiting for down_after probes"
    );
    let err = h.snapshot().last_error.unwrap();
    assert!(
        err.contains("node node-a (10.0.0.5:10250): path ssh is down"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert!(
        f.dials.try_recv().is_err(),
        "nothing is dialed while the transport is down"
    );
    assert_eq!(h.state(), PathState::Down);

    // Back: up again after up_after probes (the next two ticks).
    f.live.send_replace(true);
    let took = reach(&h, PathState::Up).await;
    assert!(took <= Duration::from_secs(20), "{took:?}");
    f.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_dropped_liveness_sender_means_down() {
    let Fixture {
        dial,
        settings,
        live,
        shutdown,
        ..
    } = fixture(1, 3);
    let h = Prober::spawn(
        "node-a".into(),
        NODE_IP,
        sshbridge_core::PathKind::Ssh,
        dial,
        live.subscribe(),
        settings,
        Duration::ZERO,
        shutdown.clone(),
        &crate::tasks::Tasks::new(),
    );
    reach(&h, PathState::Up).await;
    drop(live);
    reach(&h, PathState::Down).await;
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn probes_are_staggered_by_phase_and_spaced_by_interval() {
    let mut f = fixture(2, 3);
    let start = Instant::now();
    let _h = f.spawn(Duration::from_secs(3));
    let mut at = Vec::new();
    for _ in 0..3 {
        let t = tokio::time::timeout(T, f.dials.recv())
            .await
            .unwrap()
            .unwrap();
        at.push(t - start);
    }
    let secs = |s| Duration::from_secs(s);
    assert_eq!(at, vec![secs(3), secs(13), secs(23)]);
    f.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn without_kubelet_ca_the_state_follows_the_transport() {
    let mut f = fixture(2, 3);
    f.settings.tls = None;
    let h = f.spawn(Duration::ZERO);
    assert_eq!(reach(&h, PathState::Up).await, Duration::ZERO);
    f.live.send_replace(false);
    reach(&h, PathState::Down).await;
    f.live.send_replace(true);
    assert_eq!(
        reach(&h, PathState::Up).await,
        Duration::ZERO,
        "up again as soon as the session is"
    );
    assert!(
        f.dials.try_recv().is_err(),
        "no probe is dialed without a CA"
    );
    assert!(!h.snapshot().probing);
    f.shutdown.cancel();
}

/// What a prober published, in order.
/// One published event: a probe's outcome or a state change.
type Event = (Option<Result<(), ProbeErrorKind>>, Option<PathState>);

#[derive(Debug, Default)]
struct Recorded(StdMutex<Vec<Event>>);

impl HealthEvents for Recorded {
    fn probed(&self, _elapsed: Duration, outcome: Result<(), ProbeErrorKind>) {
        self.0.lock().unwrap().push((Some(outcome), None));
    }
    fn state_changed(&self, state: PathState) {
        self.0.lock().unwrap().push((None, Some(state)));
    }
}

#[tokio::test(start_paused = true)]
async fn a_stuck_kubelet_times_out_and_is_published_as_events() {
    let mut f = fixture(1, 1);
    let events = Arc::new(Recorded::default());
    f.settings.events = Some(events.clone());
    f.dial.set(Mode::Hang);
    let h = f.spawn(Duration::ZERO);
    assert_eq!(reach(&h, PathState::Down).await, Duration::from_secs(5));
    let err = h.snapshot().last_error.unwrap();
    assert!(
        err.contains("over ssh failed: no answer within 5s"),
        "{err}"
    );

    f.dial.set(Mode::Serve(500));
    // Paused time: the next tick (at 10s) runs its probe to completion
    // before the clock reaches 11s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(h.snapshot().probes_failed, 2);
    let err = h.snapshot().last_error.unwrap();
    assert!(
        err.contains("kubelet answered \"HTTP/1.1 500 Status\" for /healthz"),
        "{err}"
    );

    let got = events.0.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            (None, Some(PathState::Unknown)),
            (Some(Err(ProbeErrorKind::Timeout)), None),
            (None, Some(PathState::Down)),
            (Some(Err(ProbeErrorKind::Http)), None),
        ],
        "each probe and each state change is published once, as it happens"
    );
    f.shutdown.cancel();
}
