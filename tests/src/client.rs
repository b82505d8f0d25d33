//! An apiserver-like egress client: it speaks HTTP CONNECT exactly as
//! kube-apiserver's HTTPConnect egress does, over the bridge's unix socket
//! or its mutual-TLS TCP listener, and is just as strict about the answer.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// Any byte stream the client can use.
pub trait IoStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> IoStream for T {}

/// A boxed [`IoStream`].
pub type Stream = Box<dyn IoStream>;

/// Bound on every single step of the client.
const STEP: Duration = Duration::from_secs(15);
/// How long the client watches for bytes the bridge must not send between
/// its `200` head and the client's first write.
const QUIET: Duration = Duration::from_millis(150);

/// Where the bridge's HTTP CONNECT frontend is.
#[derive(Clone)]
pub enum Egress {
    /// `[egress] http_connect_uds`.
    Uds(PathBuf),
    /// `[egress] http_connect_tcp`, with the client's TLS config (trusting
    /// the bridge's CA, with or without a client certificate).
    Tls {
        /// Listen address of the bridge.
        addr: SocketAddr,
        /// Client TLS config.
        config: Arc<rustls::ClientConfig>,
    },
}

/// The bridge's answer to one request.
pub struct Connected {
    /// HTTP status.
    pub status: u16,
    /// The whole response head, including the final blank line.
    pub head: String,
    /// For non-200 answers: what followed the head until the bridge closed
    /// (the reason text). Empty for 200.
    pub body: String,
    /// The tunneled stream (meaningful for 200 only).
    pub stream: Stream,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {:?}", self.status, self.head, self.body)
    }
}

impl Egress {
    /// A fresh transport connection to the frontend.
    pub async fn open(&self) -> anyhow::Result<Stream> {
        match self {
            Egress::Uds(path) => {
                let s = tokio::time::timeout(STEP, tokio::net::UnixStream::connect(path))
                    .await
                    .context("connect to egress UDS timed out")?
                    .with_context(|| format!("connect to {}", path.display()))?;
                Ok(Box::new(s))
            }
            Egress::Tls { addr, config } => {
                let tls = async {
                    let tcp = tokio::net::TcpStream::connect(addr).await?;
                    let name = ServerName::from(addr.ip());
                    TlsConnector::from(config.clone()).connect(name, tcp).await
                };
                let s = tokio::time::timeout(STEP, tls)
                    .await
                    .context("TLS connect to egress timed out")?
                    .with_context(|| format!("TLS connect to {addr}"))?;
                Ok(Box::new(s))
            }
        }
    }

    /// Sends exactly what kube-apiserver sends for `target` (`host:port`)
    /// and reads the answer. For a 200 it fails if any byte follows the
    /// head before the client writes, as kube-apiserver would.
    pub async fn connect(&self, target: &str) -> anyhow::Result<Connected> {
        let req = format!("CONNECT {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.request(req.as_bytes()).await
    }

    /// Like [`Egress::connect`], for targets that speak first (the bytes
    /// after the head are theirs): skips the no-byte-after-head check.
    pub async fn connect_server_speaks_first(&self, target: &str) -> anyhow::Result<Connected> {
        let req = format!("CONNECT {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        request_over(self.open().await?, req.as_bytes(), false).await
    }

    /// Sends `raw` bytes as the request and reads the answer like
    /// [`Egress::connect`] does.
    pub async fn request(&self, raw: &[u8]) -> anyhow::Result<Connected> {
        let stream = self.open().await?;
        request_over(stream, raw, true).await
    }
}

/// Writes `raw` on `stream` and reads the response head byte by byte. With
/// `strict`, a 200 followed by any byte before the client writes is an
/// error, as it is for kube-apiserver.
pub async fn request_over(
    mut stream: Stream,
    raw: &[u8],
    strict: bool,
) -> anyhow::Result<Connected> {
    tokio::time::timeout(STEP, stream.write_all(raw))
        .await
        .context("writing the request timed out")??;
    let head = tokio::time::timeout(STEP, read_head(&mut stream))
        .await
        .context("no response head within 15s")??;
    let status: u16 = head
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP status line: {head:?}"))?;
    let mut body = Vec::new();
    if status == 200 && strict {
        let mut byte = [0u8; 1];
        if let Ok(read) = tokio::time::timeout(QUIET, stream.read(&mut byte)).await {
            match read {
                Ok(0) => bail!("the bridge closed the stream right after its 200"),
                Ok(_) => bail!(
                    "the bridge sent {:?} after the 200 head before the client wrote; \
                     kube-apiserver fails such a tunnel",
                    byte[0] as char
                ),
                Err(e) => bail!("reading after the 200 head: {e}"),
            }
        }
    } else if status != 200 {
        let mut buf = [0u8; 1024];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await
        {
            if n == 0 || body.len() > 64 * 1024 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
    }
    Ok(Connected {
        status,
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
        stream,
    })
}

/// Reads up to and including `\r\n\r\n`, one byte at a time so nothing
/// after the head is consumed.
async fn read_head(stream: &mut Stream) -> anyhow::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            bail!("response head longer than 16 KiB");
        }
        if stream.read(&mut byte).await? == 0 {
            bail!(
                "the bridge closed the connection before a full response head (got {:?})",
                String::from_utf8_lossy(&head)
            );
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Speaks HTTPS over a tunneled `stream` to a kubelet at `ip` (verified
/// with `tls`), sends `GET path` and returns status and body.
pub async fn kubelet_get(
    stream: Stream,
    tls: Arc<rustls::ClientConfig>,
    ip: IpAddr,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut s = TlsConnector::from(tls)
            .connect(ServerName::from(ip), stream)
            .await
            .context("TLS handshake with the kubelet through the tunnel")?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        // The stand-in closes after `Connection: close`; some TLS stacks
        // end without close_notify, which is fine here.
        let _ = s.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .context("no response from kubelet")?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("bad kubelet status line")?;
        Ok::<_, anyhow::Error>((status, body.to_string()))
    };
    tokio::time::timeout(STEP, exchange)
        .await
        .context("kubelet GET through the tunnel timed out")?
}
