//! A kubelet stand-in: just enough HTTP/1.1 over TLS for probes and tests
//! to tell which node answered.
//!
//! `GET /healthz` answers `200 ok`; any other `GET` answers 200 with the
//! body `node=NAME path=PATH\n`, so a test that went through the wrong
//! tunnel sees the wrong name. Other methods get 405, malformed requests
//! 400 (and the connection is closed). Connections are kept alive until the
//! client closes, asks `Connection: close`, idles for a minute, or the
//! shutdown token fires.
//!
//! Not a kubelet: no authentication, no exec/logs/port-forward.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body read and discarded.
const MAX_BODY: u64 = 1024 * 1024;
/// Deadline for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A running kubelet stand-in. Dropping the handle does not stop it; cancel
/// the shutdown token given to [`Kubelet::start`] for that.
#[derive(Debug, Clone)]
pub struct Kubelet {
    node: String,
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
}

impl Kubelet {
    /// Serves HTTPS on `listener` as node `node_name` until `shutdown` is
    /// cancelled. Fails only if the listener has no local address.
    pub fn start(
        listener: TcpListener,
        node_name: String,
        tls: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> io::Result<Self> {
        let kubelet = Kubelet {
            node: node_name,
            addr: listener.local_addr()?,
            requests: Arc::new(AtomicU64::new(0)),
            connections: Arc::new(AtomicU64::new(0)),
        };
        let acceptor = TlsAcceptor::from(tls);
        let this = kubelet.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::debug!(node = %this.node, error = %e, "kubelet accept failed");
                            continue;
                        }
                    },
                };
                this.connections.fetch_add(1, Ordering::Relaxed);
                let (acceptor, this, shutdown) = (acceptor.clone(), this.clone(), shutdown.clone());
                tokio::spawn(async move {
                    let serve = async {
                        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                            .await
                            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake"))??;
                        this.serve(tls).await
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        res = serve => if let Err(e) = res {
                            tracing::debug!(node = %this.node, %peer, error = %e, "kubelet connection ended");
                        },
                    }
                });
            }
        });
        Ok(kubelet)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node name it answers with.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// Requests answered so far (all paths, all statuses).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S) -> io::Result<()> {
        let mut stream = BufReader::new(stream);
        loop {
            let head = match tokio::time::timeout(IDLE_TIMEOUT, read_head(&mut stream)).await {
                Err(_) | Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(head))) => head,
                Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    respond(&mut stream, 400, "Bad Request", "bad request\n", true).await?;
                    return Ok(());
                }
                Ok(Err(e)) => return Err(e),
            };
            self.requests.fetch_add(1, Ordering::Relaxed);
            let Some(req) = Request::parse(&head) else {
                respond(&mut stream, 400, "Bad Request", "bad request\n", true).await?;
                return Ok(());
            };
            if req.content_length > MAX_BODY {
                respond(&mut stream, 413, "Payload Too Large", "too large\n", true).await?;
                return Ok(());
            }
            // Discard the body so the next request on this connection parses.
            let mut body = (&mut stream).take(req.content_length);
            tokio::io::copy(&mut body, &mut tokio::io::sink()).await?;
            let close = req.close;
            if req.method != "GET" {
                respond(&mut stream, 405, "Method Not Allowed", "use GET\n", close).await?;
            } else if req.path == "/healthz" {
                respond(&mut stream, 200, "OK", "ok", close).await?;
            } else {
                let body = format!("node={} path={}\n", self.node, req.path);
                respond(&mut stream, 200, "OK", &body, close).await?;
            }
            if close {
                return Ok(());
            }
        }
    }
}

/// The parts of a request the stand-in looks at.
struct Request {
    method: String,
    path: String,
    content_length: u64,
    close: bool,
}

impl Request {
    fn parse(head: &str) -> Option<Self> {
        let mut lines = head.lines();
        let mut first = lines.next()?.split(' ');
        let (method, path, version) = (first.next()?, first.next()?, first.next()?);
        if first.next().is_some() || !version.starts_with("HTTP/1.") || !path.starts_with('/') {
            return None;
        }
        let mut req = Request {
            method: method.to_string(),
            path: path.to_string(),
            content_length: 0,
            close: version == "HTTP/1.0",
        };
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':')?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                req.content_length = value.parse().ok()?;
            } else if name.eq_ignore_ascii_case("connection") {
                req.close = value.eq_ignore_ascii_case("close");
            }
        }
        Some(req)
    }
}

/// Reads one request head up to the blank line. `Ok(None)` on a clean EOF
/// before any byte; `InvalidData` when it is too long or not UTF-8.
async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> io::Result<Option<String>> {
    let mut head = Vec::new();
    loop {
        let limit = (MAX_HEAD - head.len()) as u64;
        let n = (&mut *r).take(limit).read_until(b'\n', &mut head).await?;
        if n == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
        if head.len() >= MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
    }
    String::from_utf8(head)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "head is not UTF-8"))
}

async fn respond<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    reason: &str,
    body: &str,
    close: bool,
) -> io::Result<()> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    let msg = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{connection}\r\n{body}",
        body.len()
    );
    w.write_all(msg.as_bytes()).await?;
    w.flush().await?;
    if close {
        w.shutdown().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Pki;
    use rustls::pki_types::ServerName;
    use tokio_rustls::TlsConnector;

    const T: Duration = Duration::from_secs(10);

    async fn read_response<R: AsyncBufReadExt + Unpin>(r: &mut R) -> (u16, String) {
        let head = read_head(r).await.unwrap().unwrap();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0; len];
        r.read_exact(&mut body).await.unwrap();
        (status, String::from_utf8(body).unwrap())
    }

    #[tokio::test]
    async fn answers_health_and_names_the_node_on_one_kept_alive_connection() {
        let pki = Pki::new("ca").unwrap();
        let ip = "127.0.0.1".parse().unwrap();
        let tls = pki
            .server_config(&pki.issue_server(&[ip], &[]).unwrap())
            .unwrap();
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let shutdown = CancellationToken::new();
        let kubelet = Kubelet::start(listener, "node-a".into(), tls, shutdown.clone()).unwrap();
        let test = async {
            let tcp = tokio::net::TcpStream::connect(kubelet.local_addr())
                .await
                .unwrap();
            let connector = TlsConnector::from(pki.client_config(None).unwrap());
            let name = ServerName::from(ip);
            let mut tls = BufReader::new(connector.connect(name, tcp).await.unwrap());
            tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(read_response(&mut tls).await, (200, "ok".to_string()));
            tls.write_all(b"GET /containerLogs/a/b HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let (status, body) = read_response(&mut tls).await;
            assert_eq!(status, 200);
            assert_eq!(body, "node=node-a path=/containerLogs/a/b\n");
            tls.write_all(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
                .await
                .unwrap();
            assert_eq!(read_response(&mut tls).await.0, 405);
            tls.write_all(b"garbage\r\n\r\n").await.unwrap();
            assert_eq!(read_response(&mut tls).await.0, 400);
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "connection closes after a bad request");
        };
        tokio::time::timeout(T, test).await.unwrap();
        assert_eq!(kubelet.requests(), 4);
        assert_eq!(kubelet.connections(), 1);
        shutdown.cancel();
    }
}
