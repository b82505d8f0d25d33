use super::*;
use std::sync::Mutex;
use tokio::io::AsyncReadExt;

/// Dials a TCP target, remembering the thread each dial ran on and
/// counting the routes it decided; its streams' home is `home`.
struct Homed {
    target: std::net::SocketAddr,
    home: Option<Handle>,
    dialed_on: Mutex<Vec<Option<String>>>,
    routed: AtomicU64,
}

impl Dial for Homed {
    type Route = crate::egress::Target;

    fn route(&self, host: &str, port: u16) -> Result<Self::Route, EgressError> {
        self.routed.fetch_add(1, Ordering::Relaxed);
        crate::egress::Target::route(host, port)
    }

    async fn dial(&self, _to: Self::Route) -> Result<crate::egress::Dialed, EgressError> {
        let thread = std::thread::current().name().map(str::to_owned);
        self.dialed_on.lock().unwrap().push(thread);
        let stream = tokio::net::TcpStream::connect(self.target).await.unwrap();
        Ok(crate::egress::Dialed {
            stream: Box::new(stream),
            node: "node-a".into(),
        })
    }

    fn home(&self, _route: &Self::Route) -> Option<Handle> {
        self.home.clone()
    }
}

/// A unix-socket client's stream is dialed and copied on its path's
/// own runtime, and its bytes still arrive, early data first.
#[tokio::test]
async fn a_unix_client_moves_to_its_paths_runtime_and_its_bytes_follow() {
    let shard = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let home = shard.handle().clone();
    let (stop_shard, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("shard-under-test".into())
        .spawn(move || shard.block_on(stopped))
        .unwrap();

    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let dialer = Arc::new(Homed {
        target,
        home: Some(home),
        dialed_on: Mutex::default(),
        routed: AtomicU64::new(0),
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egress.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let life = Lifecycle::default();
    let limits = Limits {
        max_request_head: 8192,
        request_head_timeout: Duration::from_secs(5),
    };
    tokio::spawn(serve_unix(listener, dialer.clone(), limits, life.clone()));

    let exchange = async {
        let mut c = UnixStream::connect(&path).await.unwrap();
        c.write_all(b"CONNECT 10.0.0.1:80 HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\nearly ")
            .await
            .unwrap();
        let mut head = [0u8; 39];
        c.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200 Connection established\r\n\r\n");
        c.write_all(b"bytes").await.unwrap();
        let mut back = [0u8; 11];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"early bytes");
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the exchange finishes");
    assert_eq!(
        *dialer.dialed_on.lock().unwrap(),
        [Some("shard-under-test".to_string())]
    );
    // Routed once: the move does not decide the route again (a service's
    // next node is a turn taken per route).
    assert_eq!(dialer.routed.load(Ordering::Relaxed), 1);
    life.stop_accepting.cancel();
    life.abort.cancel();
    life.tracker.close();
    tokio::time::timeout(Duration::from_secs(5), life.tracker.wait())
        .await
        .expect("the moved connection task ends");
    stop_shard.send(()).unwrap();
    thread.join().unwrap().expect("stopped by the test");
}

#[tokio::test]
async fn a_connection_task_is_counted_when_it_ends_however_it_ends() {
    let life = Lifecycle::default();
    life.spawn(async {});
    let stuck = life.spawn(std::future::pending::<()>());
    stuck.abort();
    life.tracker.close();
    tokio::time::timeout(Duration::from_secs(5), life.tracker.wait())
        .await
        .expect("both tasks end");
    assert_eq!(life.finished.load(Ordering::Relaxed), 2);
}
