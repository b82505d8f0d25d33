//! The test kit of `konn_ext.rs`: the agent server with one real `sshbridge agent`
//! process, and loopback targets that count their open connections.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sshbridge::konnectivity::identity::Guard;
use sshbridge::konnectivity::{server, Flow, Hub, Options};
use sshbridge::metrics::Registry;
use sshbridge::path::BoxStream;
use sshbridge_config::{AgentIdentity, Node, Route};
use sshbridge_sim::pki::Pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Bounds every await.
pub async fn within<F: std::future::Future>(what: &str, secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The agent server and one `sshbridge agent` process serving `node-a`.
pub struct Setup {
    pub hub: Hub,
    pub agent: Child,
    pub stop: CancellationToken,
    pub _dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

impl Setup {
    pub async fn start(flow: Flow, stall_timeout: Duration) -> Result<Setup> {
        let pki = Pki::new("konn-ext-ca")?;
        let dir = tempfile::tempdir()?;
        let ca = pki.write_ca(dir.path())?;
        let (cert, key) = pki
            .issue_server(&["127.0.0.1".parse()?], &[])?
            .write_to(dir.path(), "server")?;
        // Proven identity, as in production: the agent presents node-a's
        // client certificate.
        let tls = server::tls_config(&cert, &key, Some(&ca))?;
        let (agent_cert, agent_key) = pki
            .issue_node_client("node-a")?
            .write_to(dir.path(), "agent")?;
        let options = Options {
            server_id: "bridge-test".into(),
            server_count: 1,
            max_conn_buffer: 256 * 1024,
            stall_timeout,
            dial_timeout: Duration::from_secs(5),
            identity: Guard::new(AgentIdentity::Proven, &Registry::new()),
        };
        let node = Node {
            route: Route::Konnectivity,
            ..Node::new("node-a", "127.0.0.1".parse()?, vec![])
        };
        let hub = Hub::with_flow(options, flow, &[node]);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        tokio::spawn(server::serve(listener, tls, hub.clone(), stop.clone()));
        let agent = Command::new(env!("CARGO_BIN_EXE_sshbridge"))
            .args(["agent", "--server", &addr.to_string(), "--ca-cert"])
            .arg(&ca)
            .arg("--cert")
            .arg(&agent_cert)
            .arg("--key")
            .arg(&agent_key)
            .args(["--agent-id", "a1", "--identifiers", "host=node-a"])
            .args(["--write-buffer", "262144"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start sshbridge agent")?;
        let setup = Setup {
            hub,
            agent,
            stop,
            _dir: dir,
        };
        let mut live = setup.hub.subscribe("node-a");
        within("agent connects", 20, live.wait_for(|n| *n == 1)).await?;
        Ok(setup)
    }

    pub async fn dial(&self, target: SocketAddr) -> BoxStream {
        within(
            "dial",
            10,
            self.hub.dial("node-a", "127.0.0.1", target.port()),
        )
        .await
        .expect("dial through the agent")
    }

    pub fn mode(&self) -> &'static str {
        self.hub.agents("node-a")[0].flow_control
    }

    /// Sockets the agent process holds (its server link and targets).
    pub fn agent_sockets(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.agent.id());
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|l| l.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Waits until every count is back at its start: streams on the
    /// bridge, connections through the agent, the agent's sockets and the
    /// target's connections.
    pub async fn settles(&self, agent_sockets: usize, target: &Target) {
        let start = Instant::now();
        loop {
            let now = (
                self.hub.stats("node-a").open_streams,
                self.hub.agents("node-a")[0].open_connections,
                self.agent_sockets(),
                target.open(),
            );
            if now == (0, 0, agent_sockets, 0) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "counts did not return within 10 s: (bridge streams, agent connections, \
                 agent sockets, target connections) = {now:?}, agent sockets at start {agent_sockets}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A TCP target on loopback with a count of its open connections.
pub struct Target {
    pub addr: SocketAddr,
    pub open: Arc<AtomicUsize>,
}

impl Target {
    pub async fn start<F, Fut>(serve: F) -> Target
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let (count, serve) = (open.clone(), Arc::new(serve));
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (count, serve) = (count.clone(), serve.clone());
                tokio::spawn(async move {
                    serve(s).await;
                    count.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Target { addr, open }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Echoes until EOF, then half-closes and waits for the peer to close.
    pub async fn echo() -> Target {
        Target::start(|mut s| async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = s.shutdown().await;
            let _ = s.read(&mut buf).await;
        })
        .await
    }

    /// Sends without end until the peer goes away.
    pub async fn firehose() -> Target {
        Target::start(|mut s| async move {
            let chunk = vec![0x5au8; 32 * 1024];
            while s.write_all(&chunk).await.is_ok() {}
        })
        .await
    }
}

pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}
