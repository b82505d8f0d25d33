//! A raw HTTPS/1.1 client of the apiserver with the admin certificate:
//! plain requests (status and body, chunked bodies decoded) and upgrade
//! requests (the response head as sent, then the byte stream), so tests
//! pin status lines and close sequences byte for byte.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::client::Stream;

/// Bound on one request.
const STEP: Duration = Duration::from_secs(30);

/// An HTTPS client of one apiserver.
#[derive(Clone)]
pub struct ApiHttps {
    /// The apiserver's address.
    pub addr: SocketAddr,
    /// Trusts the cluster CA, presents the admin certificate.
    pub tls: Arc<rustls::ClientConfig>,
}

/// A plain response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The head as received, up to and including the blank line.
    pub head: String,
    /// The body (chunked transfer decoded).
    pub body: String,
}

impl ApiHttps {
    async fn open(&self) -> anyhow::Result<BufReader<Stream>> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to the apiserver at {}", self.addr))?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(ServerName::from(self.addr.ip()), tcp)
            .await
            .context("TLS with the apiserver")?;
        Ok(BufReader::new(Box::new(tls) as Stream))
    }

    /// `method path` with an optional body of `content_type`; reads the
    /// whole response (the connection is closed after it).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
    ) -> anyhow::Result<Response> {
        let exchange = async {
            let mut io = self.open().await?;
            let mut req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
                self.addr
            );
            if let Some((content_type, body)) = body {
                req.push_str(&format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ));
            } else {
                req.push_str("\r\n");
            }
            io.write_all(req.as_bytes()).await?;
            let head = read_head(&mut io).await?;
            let mut raw = Vec::new();
            // Go's server closes after `Connection: close`, sometimes
            // without close_notify.
            let _ = io.read_to_end(&mut raw).await;
            let body = if header(&head, "transfer-encoding").as_deref() == Some("chunked") {
                dechunk(&raw)?
            } else {
                raw
            };
            Ok::<_, anyhow::Error>(Response {
                status: status(&head)?,
                head,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(STEP, exchange)
            .await
            .with_context(|| format!("{method} {path}: no answer within {STEP:?}"))?
    }

    /// An upgrade request (`Connection: Upgrade`, `Upgrade: SPDY/3.1`, as
    /// kubectl sends for exec and port-forward): the response head as
    /// sent, and the stream after it.
    pub async fn upgrade(
        &self,
        method: &str,
        path: &str,
    ) -> anyhow::Result<(String, BufReader<Stream>)> {
        let exchange = async {
            let mut io = self.open().await?;
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
                self.addr
            );
            io.write_all(req.as_bytes()).await?;
            let head = read_head(&mut io).await?;
            Ok::<_, anyhow::Error>((head, io))
        };
        tokio::time::timeout(STEP, exchange)
            .await
            .with_context(|| format!("{method} {path}: no answer within {STEP:?}"))?
    }
}

/// The status code of a response head.
pub fn status(head: &str) -> anyhow::Result<u16> {
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))
}

/// The value of header `name` (case-insensitive) in `head`.
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

async fn read_head(io: &mut BufReader<Stream>) -> anyhow::Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let n = io.read_until(b'\n', &mut head).await?;
        anyhow::ensure!(
            n > 0,
            "connection closed before a full response head: {:?}",
            String::from_utf8_lossy(&head)
        );
        anyhow::ensure!(head.len() < 64 * 1024, "response head too long");
    }
    Ok(String::from_utf8(head)?)
}

fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size = std::str::from_utf8(&raw[..line_end])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(raw.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
