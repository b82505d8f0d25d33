//! A tiny HTTP/1.1 client for the admin API (`unix:/path` or `host:port`):
//! `GET` and `POST` with a JSON body, one request per connection,
//! `Connection: close`, bodies delimited by `Content-Length`, chunked
//! encoding or the close. An error answer's `{"error": "..."}` body is shown
//! as its message.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use sshbridge_report::{Report, ReportError};

pub mod credentials;

pub use credentials::Credentials;

/// Largest response accepted; a report of thousands of nodes fits easily.
const MAX_RESPONSE: u64 = 64 << 20;

/// Where the admin API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAddr {
    /// `unix:/path`.
    Unix(PathBuf),
    /// `host:port` (resolved when connecting), and what to present there.
    Tcp(String, Credentials),
}

impl AdminAddr {
    /// This address with `credentials` for a TCP admin API (a unix socket
    /// needs none and is returned as it is).
    pub fn with_credentials(self, credentials: Credentials) -> AdminAddr {
        match self {
            AdminAddr::Tcp(a, _) => AdminAddr::Tcp(a, credentials),
            unix => unix,
        }
    }
}

impl FromStr for AdminAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(
                    "unix: needs a socket path, e.g. unix:/run/sshbridge/admin.sock".into(),
                );
            }
            return Ok(AdminAddr::Unix(PathBuf::from(path)));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(AdminAddr::Tcp(s.to_string(), Credentials::default()))
            }
            _ => Err(format!(
                "admin address {s:?} is neither unix:/path nor host:port (e.g. 127.0.0.1:8133)"
            )),
        }
    }
}

impl fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            AdminAddr::Tcp(a, _) => f.write_str(a),
        }
    }
}

impl From<&sshbridge_config::Listen> for AdminAddr {
    fn from(l: &sshbridge_config::Listen) -> Self {
        match l {
            sshbridge_config::Listen::Unix(p) => AdminAddr::Unix(p.clone()),
            sshbridge_config::Listen::Tcp(a) => {
                AdminAddr::Tcp(a.to_string(), Credentials::default())
            }
        }
    }
}

/// Why a request to the admin API failed. Each message names the address.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing accepted the connection.
    #[error(
        "cannot reach the sshbridge admin API at {addr}: {}; is `sshbridge run` running? use --admin",
        plain(.error)
    )]
    Connect {
        /// The address dialed.
        addr: String,
        /// What the OS said (kept out of `source()`: the message has it).
        error: std::io::Error,
    },
    /// The connection broke mid-request.
    #[error("admin API at {addr}: connection failed: {}", plain(.error))]
    Io {
        /// The address dialed.
        addr: String,
        /// What the OS said (kept out of `source()`: the message has it).
        error: std::io::Error,
    },
    /// No complete answer in time.
    #[error("admin API at {addr} did not answer within {}s; is the daemon stuck? check its logs", .after.as_secs())]
    Timeout {
        /// The address dialed.
        addr: String,
        /// The limit.
        after: Duration,
    },
    /// The answer was not HTTP/1.x as expected.
    #[error("admin API at {addr} sent a malformed HTTP response: {reason}; is this an sshbridge admin listener?")]
    Malformed {
        /// The address dialed.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// A status other than 200.
    #[error("admin API at {addr} answered {status} for {path}: {body}")]
    Status {
        /// The address dialed.
        addr: String,
        /// Requested path.
        path: String,
        /// HTTP status code.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// TLS to the admin API could not be set up.
    #[error("admin API at {addr}: {reason}")]
    Tls {
        /// The address dialed.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The body was not a report.
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// Fetches `GET path` from the admin API and returns the body of a 200
/// answer; the whole exchange is bounded by `timeout`.
pub async fn get(addr: &AdminAddr, path: &str, timeout: Duration) -> Result<Vec<u8>, ClientError> {
    request(addr, "GET", path, None, timeout).await
}

/// Sends `POST path` with `body_json` (`Content-Type: application/json`)
/// to the admin API and returns the body of a 200 answer; the whole
/// exchange is bounded by `timeout`.
pub async fn post(
    addr: &AdminAddr,
    path: &str,
    body_json: &str,
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    request(addr, "POST", path, Some(body_json), timeout).await
}

async fn request(
    addr: &AdminAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let name = addr.to_string();
    let authorization = match addr {
        AdminAddr::Tcp(_, c) => c.authorization(),
        AdminAddr::Unix(_) => None,
    };
    let req = Request {
        addr: &name,
        method,
        path,
        body,
        authorization: authorization.as_deref(),
    };
    let exchange = async {
        match addr {
            AdminAddr::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p).await;
                exchange(s.map_err(|e| connect_error(&name, e))?, &req).await
            }
            AdminAddr::Tcp(a, credentials) => {
                let s = tokio::net::TcpStream::connect(a.as_str()).await;
                let s = s.map_err(|e| connect_error(&name, e))?;
                let tls = credentials.tls().map_err(|e| ClientError::Tls {
                    addr: name.clone(),
                    reason: e.to_string(),
                })?;
                match tls {
                    None => exchange(s, &req).await,
                    Some(config) => {
                        let server =
                            credentials::server_name(a).ok_or_else(|| ClientError::Tls {
                                addr: name.clone(),
                                reason: "the host is neither an IP address nor a DNS name".into(),
                            })?;
                        let s = tokio_rustls::TlsConnector::from(config)
                            .connect(server, s)
                            .await
                            .map_err(|e| ClientError::Tls {
                                addr: name.clone(),
                                reason: format!(
                                    "TLS handshake failed: {e}; check --admin-ca and --admin-cert"
                                ),
                            })?;
                        exchange(s, &req).await
                    }
                }
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout {
            addr: name,
            after: timeout,
        }),
    }
}

/// Fetches and parses `GET /report`.
pub async fn fetch_report(addr: &AdminAddr, timeout: Duration) -> Result<Report, ClientError> {
    let body = get(addr, "/report", timeout).await?;
    let text = String::from_utf8_lossy(&body);
    Ok(Report::from_json(&text, &format!("report from {addr}"))?)
}

/// One request as sent.
struct Request<'a> {
    addr: &'a str,
    method: &'a str,
    path: &'a str,
    body: Option<&'a str>,
    /// `Authorization: ...\r\n`, when a token is to be sent.
    authorization: Option<&'a str>,
}

async fn exchange<S>(mut s: S, req: &Request<'_>) -> Result<Vec<u8>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (addr, path) = (req.addr, req.path);
    let io = |error| ClientError::Io {
        addr: addr.to_string(),
        error,
    };
    let host = match addr.strip_prefix("unix:") {
        Some(_) => "localhost",
        None => addr,
    };
    let mut request = format!(
        "{} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sshbridge/{}\r\n\
         Accept: application/json\r\nConnection: close\r\n",
        req.method,
        env!("CARGO_PKG_VERSION")
    );
    if let Some(line) = req.authorization {
        request.push_str(line);
    }
    match req.body {
        Some(body) => request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )),
        None if req.method == "GET" => request.push_str("\r\n"),
        None => request.push_str("Content-Length: 0\r\n\r\n"),
    }
    s.write_all(request.as_bytes()).await.map_err(io)?;
    s.flush().await.map_err(io)?;
    let mut raw = Vec::new();
    (&mut s)
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .await
        .map_err(io)?;
    let malformed = |reason: String| ClientError::Malformed {
        addr: addr.to_string(),
        reason,
    };
    let (status, body) = parse_response(&raw).map_err(malformed)?;
    if status != 200 {
        let text = String::from_utf8_lossy(&body);
        // The admin API's own one-line errors are shown whole; anything
        // else (a proxy's HTML page, say) only its start.
        let body: String = match error_message(&text) {
            Some(message) => message.chars().take(2000).collect(),
            None => text.trim().chars().take(200).collect(),
        };
        return Err(ClientError::Status {
            addr: addr.to_string(),
            path: path.to_string(),
            status,
            body,
        });
    }
    Ok(body)
}

/// The `error` of a `{"error": "..."}` body, the admin API's error shape.
fn error_message(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(v.get("error")?.as_str()?.trim().to_string())
}

/// Splits a complete response (read until close) into status and body.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {} bytes", raw.len()))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8".to_string())?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|c| c.parse::<u16>().ok());
    let status = match (version.starts_with("HTTP/1."), status) {
        (true, Some(code)) => code,
        _ => return Err(format!("bad status line {status_line:?}")),
    };
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        if rest.len() < n {
            return Err(format!("body ended after {} of {n} bytes", rest.len()));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunked body ended early")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err("chunked body ended early".into());
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn connect_error(addr: &str, error: std::io::Error) -> ClientError {
    ClientError::Connect {
        addr: addr.to_string(),
        error,
    }
}

/// The OS message without its " (os error N)" suffix.
fn plain(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests;
