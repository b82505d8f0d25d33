//! An apiserver-like egress client: writes exactly the CONNECT kube-apiserver
//! writes and reads the response head byte by byte, so it never consumes a
//! byte of the tunneled stream.

use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// The response head of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectResponse {
    /// HTTP status code.
    pub status: u16,
    /// The body of an error response (the bridge's one-line reason), empty on 200.
    pub reason: String,
}

/// Writes `CONNECT target HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n` and reads the
/// response head; on an error status also reads the body (the reason).
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: &str,
) -> std::io::Result<ConnectResponse> {
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(128);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(std::io::Error::other("response head over 16 KiB"));
        }
        head.push(stream.read_u8().await?);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response head {text:?}")))?;
    let mut reason = String::new();
    if status != 200 {
        stream.read_to_string(&mut reason).await?;
    }
    Ok(ConnectResponse {
        status,
        reason: reason.trim_end().to_string(),
    })
}

/// Connects to an HTTP CONNECT unix socket and sends one CONNECT.
pub async fn connect_uds(
    socket: &Path,
    target: &str,
) -> std::io::Result<(ConnectResponse, UnixStream)> {
    let mut stream = UnixStream::connect(socket).await?;
    let response = connect(&mut stream, target).await?;
    Ok((response, stream))
}
