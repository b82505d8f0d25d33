//! One kubelet probe: dial through the path, TLS with the kubelet CA and
//! the node address as server name, `GET kubelet_path`, expect 200.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::CertificateError;
use tokio_rustls::TlsConnector;

use super::ProbeDial;
use crate::path::DialError;

/// Largest answer head buffered from the kubelet (hyper's minimum).
const MAX_HEAD: usize = 8192;

/// What kind of failure a probe had; the `result` label of
/// `sshbridge_probes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeErrorKind {
    /// The path could not open a stream to the kubelet.
    Dial,
    /// The TLS handshake failed (certificate or protocol).
    Tls,
    /// The connection broke, or the answer was not HTTP.
    Io,
    /// The kubelet answered with a status other than 200.
    Http,
    /// No answer within the probe timeout.
    Timeout,
}

impl ProbeErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ProbeErrorKind; 5] = [
        ProbeErrorKind::Dial,
        ProbeErrorKind::Tls,
        ProbeErrorKind::Io,
        ProbeErrorKind::Http,
        ProbeErrorKind::Timeout,
    ];

    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeErrorKind::Dial => "dial_error",
            ProbeErrorKind::Tls => "tls_error",
            ProbeErrorKind::Io => "io_error",
            ProbeErrorKind::Http => "http_error",
            ProbeErrorKind::Timeout => "timeout",
        }
    }
}

/// Why one probe failed. Shown inside [`ProbeFailure`], which names the
/// node, the address and the path.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The path refused or failed the dial.
    #[error("dial: {0}")]
    Dial(#[source] DialError),
    /// The TLS handshake failed; the text is rustls' plus a hint.
    #[error("TLS: {0} ({hint})", hint = tls_hint(.0))]
    Tls(#[source] rustls::Error),
    /// The connection broke or the answer was not HTTP/1.x.
    #[error("connection: {0}")]
    Io(#[source] io::Error),
    /// The kubelet answered, but not with 200.
    #[error("kubelet answered \"{status_line}\" for {path}, expected 200 (check health.kubelet_path and the kubelet's authorization of anonymous /healthz)")]
    Status {
        /// The status code.
        code: u16,
        /// The whole status line.
        status_line: String,
        /// The path that was requested.
        path: String,
    },
    /// No complete answer within the probe timeout.
    #[error("no answer within {0:?} (the kubelet or the path is stuck or overloaded)")]
    Timeout(Duration),
}

impl ProbeError {
    /// The bounded kind for metrics.
    pub fn kind(&self) -> ProbeErrorKind {
        match self {
            ProbeError::Dial(_) => ProbeErrorKind::Dial,
            ProbeError::Tls(_) => ProbeErrorKind::Tls,
            ProbeError::Io(_) => ProbeErrorKind::Io,
            ProbeError::Status { .. } => ProbeErrorKind::Http,
            ProbeError::Timeout(_) => ProbeErrorKind::Timeout,
        }
    }
}

/// A failed probe with what the user needs to find it.
#[derive(Debug, thiserror::Error)]
#[error("probe of {node} ({target}) over {path} failed: {error}")]
pub struct ProbeFailure {
    /// Node name.
    pub node: String,
    /// Kubelet address probed.
    pub target: SocketAddr,
    /// The path probed.
    pub path: sshbridge_core::PathKind,
    /// What went wrong.
    #[source]
    pub error: ProbeError,
}

fn tls_hint(e: &rustls::Error) -> &'static str {
    use CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature | C::BadEncoding => {
                "is health.kubelet_ca the CA that signed the kubelet's serving certificate?"
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the kubelet's serving certificate must carry the node address as an IP SAN"
            }
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => {
                "renew the kubelet's serving certificate, or check the clocks"
            }
            _ => "check the kubelet's serving certificate against health.kubelet_ca",
        },
        _ => "check that health.kubelet_port is the kubelet's HTTPS port",
    }
}

/// Maps an I/O error from the TLS stream: rustls' own errors (carried
/// inside by tokio-rustls) become [`ProbeError::Tls`].
fn classify(e: io::Error) -> ProbeError {
    let is_tls = e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
    if is_tls {
        let inner = e.into_inner().expect("checked above");
        return match inner.downcast::<rustls::Error>() {
            Ok(tls) => ProbeError::Tls(*tls),
            Err(other) => ProbeError::Io(io::Error::other(other)),
        };
    }
    ProbeError::Io(e)
}

/// Runs one probe (without a timeout; the caller bounds it): one
/// `GET kubelet_path` on hyper's HTTP/1.1 connection over the path's
/// stream, TLS with the kubelet CA; only the status is read.
pub(crate) async fn probe_once<D: ProbeDial>(
    dialer: &D,
    address: IpAddr,
    port: u16,
    path: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(), ProbeError> {
    let stream = dialer
        .dial(&address.to_string(), port)
        .await
        .map_err(ProbeError::Dial)?;
    let name = ServerName::IpAddress(address.into());
    let tls = TlsConnector::from(tls)
        .connect(name, stream)
        .await
        .map_err(classify)?;
    let host = SocketAddr::new(address, port).to_string();
    let request = hyper::Request::get(path)
        .header(HOST, host)
        .header(USER_AGENT, "sshbridge-probe")
        .header(ACCEPT, "*/*")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ProbeError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .handshake(TokioIo::new(tls))
        .await
        .map_err(from_hyper)?;
    let exchange = async move {
        let response = sender.send_request(request).await.map_err(from_hyper)?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(ProbeError::Status {
                code: status.as_u16(),
                status_line: status_line(&response),
                path: path.to_string(),
            });
        }
        Ok(())
    };
    // The answer's status is all a probe needs: the connection is dropped
    // with the exchange, body unread. A connection that ends first may
    // still have delivered the answer.
    tokio::pin!(exchange);
    tokio::select! {
        biased;
        result = &mut exchange => result,
        ended = conn => match (ended, exchange.await) {
            // The connection's own error says more than "closed".
            (Err(e), Err(ProbeError::Io(_))) => Err(from_hyper(e)),
            (_, result) => result,
        },
    }
}

/// The answer's status line as the kubelet sent it (hyper keeps a
/// non-canonical reason phrase; a canonical one it leaves implied).
fn status_line<B>(response: &hyper::Response<B>) -> String {
    let status = response.status();
    let reason = match response.extensions().get::<hyper::ext::ReasonPhrase>() {
        Some(r) => String::from_utf8_lossy(r.as_bytes()).into_owned(),
        None => status.canonical_reason().unwrap_or_default().to_string(),
    };
    format!("{:?} {} {reason}", response.version(), status.as_u16())
}

/// Maps a hyper error: I/O (and TLS inside it) by [`classify`], anything
/// else (not an HTTP response) as invalid data.
fn from_hyper(e: hyper::Error) -> ProbeError {
    let io = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<io::Error>());
    match io {
        Some(inner) => {
            let tls = inner
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .cloned();
            match tls {
                Some(tls) => ProbeError::Tls(tls),
                None => ProbeError::Io(io::Error::new(inner.kind(), inner.to_string())),
            }
        }
        None => ProbeError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP response: {e}"),
        )),
    }
}
