//! A kubelet stand-in for a real kube-apiserver: HTTPS (certificate from
//! the cluster CA, which the apiserver is told via
//! `--kubelet-certificate-authority`) answering the kubelet paths the
//! apiserver proxies to:
//!
//! - `GET /containerLogs/NS/POD/C`: a fixed log (`kubectl logs`); with
//!   `follow=true` a chunked stream of the lines the test feeds with
//!   [`ApiKubelet::feed`], ended by [`ApiKubelet::end_follow`]
//!   (`kubectl logs -f`);
//! - a request with an `Upgrade` header (`/exec/...`, `/portForward/...`):
//!   `101 Switching Protocols`, one line `NODE METHOD TARGET\n`, then an
//!   echo of every byte until the client closes its side;
//! - `GET /healthz`: `ok`; any other `GET`: `node=NODE path=PATH\n` (node
//!   proxy).
//!
//! Every request head is recorded ([`ApiKubelet::seen`]) so tests pin what
//! the apiserver sent.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sshbridge_sim::pki::Pki;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Mutex};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// One request as the kubelet received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// The `Upgrade` header, if any.
    pub upgrade: Option<String>,
}

/// A running stand-in; dropping the handle stops it (the listener and
/// every connection end).
pub struct ApiKubelet {
    node: String,
    addr: SocketAddr,
    seen: watch::Receiver<Vec<Seen>>,
    feed: mpsc::UnboundedSender<Option<String>>,
    /// Cancelled on drop: stops the accept loop and every connection.
    stop: CancellationToken,
}

impl Drop for ApiKubelet {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Shared {
    node: String,
    seen: watch::Sender<Vec<Seen>>,
    /// Lines for `logs -f`; `None` ends the stream. One follower at a time.
    feed: Mutex<mpsc::UnboundedReceiver<Option<String>>>,
}

impl ApiKubelet {
    /// Listens on `ip` (port picked by the OS) as node `node` with a
    /// serving certificate for `ip` from `pki`.
    pub async fn start(pki: &Pki, ip: IpAddr, node: &str) -> anyhow::Result<Self> {
        let tls = pki.server_config(&pki.issue_server(&[ip], &[node])?)?;
        let listener = TcpListener::bind((ip, 0))
            .await
            .with_context(|| format!("binding a kubelet on {ip}"))?;
        let addr = listener.local_addr()?;
        let (seen_tx, seen) = watch::channel(Vec::new());
        let (feed, feed_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            node: node.to_string(),
            seen: seen_tx,
            feed: Mutex::new(feed_rx),
        });
        let stop = CancellationToken::new();
        let acceptor = TlsAcceptor::from(tls);
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => match a {
                        Ok((tcp, _)) => tcp,
                        Err(_) => continue,
                    },
                };
                let (acceptor, shared, token) = (acceptor.clone(), shared.clone(), token.clone());
                tokio::spawn(async move {
                    let serve = async {
                        let tls =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                                .await??;
                        shared.serve(tls).await
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        r = serve => if let Err(e) = r {
                            tracing::debug!(error = %e, "fake kubelet connection ended");
                        },
                    }
                });
            }
        });
        Ok(ApiKubelet {
            node: node.to_string(),
            addr,
            seen,
            feed,
            stop,
        })
    }

    /// Where it listens (the node's InternalIP and kubelet port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node name it answers as.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The fixed body of `GET /containerLogs/NS/POD/C` without `follow`.
    pub fn log_body(&self, target: &str) -> String {
        log_body(&self.node, target)
    }

    /// Queues one line for the current (or next) `logs -f` stream.
    pub fn feed(&self, line: &str) {
        let _ = self.feed.send(Some(line.to_string()));
    }

    /// Ends the current (or next) `logs -f` stream cleanly.
    pub fn end_follow(&self) {
        let _ = self.feed.send(None);
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.borrow().clone()
    }

    /// Waits (bounded) until a request matching `f` has been received.
    pub async fn wait_seen(
        &self,
        what: &str,
        within: Duration,
        f: impl Fn(&Seen) -> bool,
    ) -> anyhow::Result<Seen> {
        let mut rx = self.seen.clone();
        let found = tokio::time::timeout(within, rx.wait_for(|v| v.iter().any(&f)))
            .await
            .with_context(|| format!("{}: no {what} within {within:?}", self.node))?
            .context("kubelet stopped")?
            .iter()
            .find(|s| f(s))
            .cloned();
        found.context("vanished")
    }
}

fn log_body(node: &str, target: &str) -> String {
    format!("log of {target} on {node}\nsecond line\n")
}

impl Shared {
    async fn serve<S: tokio::io::AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: S,
    ) -> anyhow::Result<()> {
        let mut io = BufReader::new(io);
        loop {
            let Some(head) = read_head(&mut io).await? else {
                return Ok(());
            };
            let (seen, length) = parse(&head).context("malformed request")?;
            self.seen.send_modify(|v| v.push(seen.clone()));
            let mut body = (&mut io).take(length);
            tokio::io::copy(&mut body, &mut tokio::io::sink()).await?;
            if seen.upgrade.is_some() {
                return self.upgraded(io, &seen).await;
            }
            let path = seen.target.split('?').next().unwrap_or_default();
            if seen.method != "GET" {
                respond(&mut io, "405 Method Not Allowed", "use GET\n").await?;
            } else if path.starts_with("/containerLogs/") && seen.target.contains("follow=true") {
                self.follow(&mut io).await?;
            } else if path.starts_with("/containerLogs/") {
                respond(&mut io, "200 OK", &log_body(&self.node, &seen.target)).await?;
            } else if path == "/healthz" {
                respond(&mut io, "200 OK", "ok").await?;
            } else {
                let body = format!("node={} path={}\n", self.node, seen.target);
                respond(&mut io, "200 OK", &body).await?;
            }
        }
    }

    /// `101`, a line naming node and request, then an echo until EOF.
    async fn upgraded<S: tokio::io::AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut io: BufReader<S>,
        seen: &Seen,
    ) -> anyhow::Result<()> {
        let upgrade = seen.upgrade.as_deref().unwrap_or_default();
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n\r\n{} {} {}\n",
            self.node, seen.method, seen.target
        );
        io.write_all(head.as_bytes()).await?;
        io.flush().await?;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = io.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            io.write_all(&buf[..n]).await?;
            io.flush().await?;
        }
        io.shutdown().await?;
        Ok(())
    }

    /// A chunked `200` carrying fed lines as they come; `None` ends it.
    async fn follow<W: AsyncWrite + Unpin>(&self, w: &mut W) -> anyhow::Result<()> {
        w.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await?;
        w.flush().await?;
        let mut feed = self.feed.lock().await;
        while let Some(Some(line)) = feed.recv().await {
            let chunk = format!("{line}\n");
            w.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                .await?;
            w.flush().await?;
        }
        w.write_all(b"0\r\n\r\n").await?;
        w.flush().await?;
        Ok(())
    }
}

/// The request line and the headers the stand-in needs, and the body length.
fn parse(head: &str) -> Option<(Seen, u64)> {
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let (mut upgrade, mut length) = (None, 0);
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok()?;
        }
    }
    let seen = Seen {
        method,
        target,
        upgrade,
    };
    Some((seen, length))
}

async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> anyhow::Result<Option<String>> {
    let mut head = Vec::new();
    loop {
        let n = (&mut *r)
            .take((MAX_HEAD - head.len()) as u64)
            .read_until(b'\n', &mut head)
            .await?;
        if n == 0 {
            anyhow::ensure!(head.is_empty(), "connection closed inside a request head");
            return Ok(None);
        }
        if head.ends_with(b"\r\n\r\n") {
            return Ok(Some(String::from_utf8(head)?));
        }
        anyhow::ensure!(head.len() < MAX_HEAD, "request head too long");
    }
}

async fn respond<W: AsyncWrite + Unpin>(w: &mut W, status: &str, body: &str) -> anyhow::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    w.write_all(msg.as_bytes()).await?;
    w.flush().await?;
    Ok(())
}
