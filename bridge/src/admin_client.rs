//! The admin API's client (`unix:/path` or `host:port`, plain or TLS):
//! hyper's HTTP/1.1 connection, `GET` and `POST` with a JSON body, one
//! request per connection, `Connection: close`. An error answer's
//! `{"error": "..."}` body is shown as its message.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use sshbridge_report::{Report, ReportError};

pub mod credentials;

pub use credentials::Credentials;

/// Largest response accepted; a report of thousands of nodes fits easily.
const MAX_RESPONSE: usize = 64 << 20;

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
    /// The `Authorization` header's value, when a token is to be sent.
    authorization: Option<&'a str>,
}

async fn exchange<S>(s: S, req: &Request<'_>) -> Result<Vec<u8>, ClientError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (addr, path) = (req.addr, req.path);
    let malformed = |e: &dyn std::fmt::Display| ClientError::Malformed {
        addr: addr.to_string(),
        reason: e.to_string(),
    };
    let failed = |e: hyper::Error| match std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
    {
        Some(io) => ClientError::Io {
            addr: addr.to_string(),
            error: std::io::Error::new(io.kind(), io.to_string()),
        },
        None => malformed(&e),
    };
    let host = match addr.strip_prefix("unix:") {
        Some(_) => "localhost",
        None => addr,
    };
    let mut request = hyper::Request::builder()
        .method(req.method)
        .uri(path)
        .header(HOST, host)
        .header(USER_AGENT, concat!("sshbridge/", env!("CARGO_PKG_VERSION")))
        .header(ACCEPT, "application/json")
        .header(CONNECTION, "close");
    if let Some(value) = req.authorization {
        request = request.header(hyper::header::AUTHORIZATION, value);
    }
    if req.body.is_some() {
        request = request.header(CONTENT_TYPE, "application/json");
    }
    let body = Full::new(Bytes::from(req.body.unwrap_or_default().to_owned()));
    let request = request.body(body).map_err(|e| malformed(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(s))
        .await
        .map_err(failed)?;
    let work = async move {
        let response = sender.send_request(request).await.map_err(failed)?;
        drop(sender);
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| malformed(&format!("body: {e}")))?
            .to_bytes();
        Ok::<_, ClientError>((status, body))
    };
    // The connection ends with the answer (`Connection: close`); its own
    // error, if any, is the request's too.
    let (answer, _) = tokio::join!(work, conn);
    let (status, body) = answer?;
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
    Ok(body.to_vec())
}

/// The `error` of a `{"error": "..."}` body, the admin API's error shape.
fn error_message(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(v.get("error")?.as_str()?.trim().to_string())
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
