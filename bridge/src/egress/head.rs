//! The CONNECT request head: read it with a size and time limit (by hand:
//! the bytes after the head are the tunnel's and must not be lost), parse
//! the request line and headers with `httparse`, then the authority.
//!
//! kube-apiserver writes exactly `CONNECT host:port HTTP/1.1\r\nHost:
//! 127.0.0.1\r\n\r\n` and nothing more until it has read the response, but
//! other clients may pipeline bytes after the head; those are kept and sent
//! to the target first.

use tokio::io::{AsyncRead, AsyncReadExt};

/// A request the frontend cannot serve, with the status to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not HTTP, a bad authority, or a head over the size limit. HTTP 400.
    #[error("{0}")]
    Malformed(String),
    /// A method other than CONNECT. HTTP 405.
    #[error("method {0} is not allowed; this endpoint only accepts CONNECT host:port")]
    NotConnect(String),
    /// The client closed or stalled before the head was complete; nothing
    /// to answer.
    #[error("client closed the connection before the request head was complete")]
    Closed,
}

impl HeadError {
    /// The HTTP status to answer with, if any.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            HeadError::Malformed(_) => Some(400),
            HeadError::NotConnect(_) => Some(405),
            HeadError::Closed => None,
        }
    }
}

/// A parsed CONNECT request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Target host, brackets of an IPv6 literal removed.
    pub host: String,
    /// Target port.
    pub port: u16,
    /// Bytes the client sent after the head, to forward first.
    pub early_data: Vec<u8>,
}

/// Reads one CONNECT request head of at most `max` bytes. The caller
/// bounds the time.
pub async fn read<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> Result<Connect, HeadError> {
    match read_until_end(reader, max).await? {
        Raw::Head { head, rest } => parse(&head).map(|(host, port)| Connect {
            host,
            port,
            early_data: rest,
        }),
        // A non-CONNECT method is worth a 405 even when the head is huge.
        Raw::TooLarge(partial) => match method_of(&partial).filter(|m| *m != "CONNECT") {
            Some(method) => Err(HeadError::NotConnect(method.to_string())),
            None => Err(too_large(max)),
        },
    }
}

enum Raw {
    /// The head (ending in `\r\n\r\n`) and what followed it.
    Head { head: Vec<u8>, rest: Vec<u8> },
    /// More than `max` bytes without an end of head; what was read.
    TooLarge(Vec<u8>),
}

async fn read_until_end<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Raw, HeadError> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = reader
            .read(&mut chunk)
            .await
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end(&buf[scan_from..]).map(|e| e + scan_from) {
            if end > max {
                return Ok(Raw::TooLarge(buf));
            }
            let rest = buf.split_off(end);
            return Ok(Raw::Head { head: buf, rest });
        }
        if buf.len() > max {
            return Ok(Raw::TooLarge(buf));
        }
    }
}

fn too_large(max: usize) -> HeadError {
    HeadError::Malformed(format!(
        "request head is larger than {max} bytes (egress.max_request_head)"
    ))
}

/// Index just past the first `\r\n\r\n`.
fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn method_of(buf: &[u8]) -> Option<&str> {
    let line = buf.split(|&b| b == b' ').next()?;
    let m = std::str::from_utf8(line).ok()?;
    (!m.is_empty() && m.len() <= 16 && m.bytes().all(|b| b.is_ascii_uppercase())).then_some(m)
}

/// Most headers a CONNECT head may carry (kube-apiserver sends one).
const MAX_HEADERS: usize = 64;

/// Parses the head (ending in `\r\n\r\n`) with `httparse` into host and
/// port: HTTP/1.0 or 1.1, method CONNECT, an authority-form target.
fn parse(head: &[u8]) -> Result<(String, u16), HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let line = || {
        let end = head.iter().position(|&b| b == b'\r').unwrap_or(head.len());
        truncate(&String::from_utf8_lossy(&head[..end]))
    };
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HeadError::Malformed("incomplete request head".into()))
        }
        Err(httparse::Error::Version) => {
            return Err(HeadError::Malformed(format!(
                "unsupported protocol in {:?}; expected HTTP/1.1",
                line()
            )))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::Malformed(format!(
                "more than {MAX_HEADERS} headers in the request head"
            )))
        }
        Err(e) => {
            return Err(HeadError::Malformed(format!(
                "malformed request head ({e}) at {:?}; expected CONNECT host:port HTTP/1.1",
                line()
            )))
        }
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(HeadError::Malformed("incomplete request line".into()));
    };
    if method != "CONNECT" {
        return Err(HeadError::NotConnect(truncate(method)));
    }
    parse_authority(target)
}

/// Parses `host:port` or `[v6]:port`.
pub fn parse_authority(target: &str) -> Result<(String, u16), HeadError> {
    let bad = |why: &str| {
        HeadError::Malformed(format!(
            "bad CONNECT target {:?}: {why}; expected host:port",
            truncate(target)
        ))
    };
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        let port = after.strip_prefix(':').ok_or_else(|| bad("missing port"))?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| bad("not an IPv6 address in brackets"))?;
        (host, port)
    } else {
        let (host, port) = target.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
        if host.contains(':') {
            return Err(bad("IPv6 addresses must be in brackets"));
        }
        (host, port)
    };
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    if !valid_host {
        return Err(bad("invalid host"));
    }
    let port: u16 = port.parse().map_err(|_| bad("invalid port"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    Ok((host.to_string(), port))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_str(s: &[u8], max: usize) -> Result<Connect, HeadError> {
        read(&mut &s[..], max).await
    }

    #[tokio::test]
    async fn apiserver_bytes_parse() {
        let c = read_str(
            b"CONNECT node-a:10250 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            8192,
        )
        .await
        .unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.early_data.len()),
            ("node-a", 10250, 0)
        );
    }

    #[tokio::test]
    async fn ipv6_literal_and_early_data() {
        let c = read_str(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\nhello", 8192)
            .await
            .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 443));
        assert_eq!(c.early_data, b"hello");
    }

    #[tokio::test]
    async fn statuses_for_bad_requests() {
        let cases: &[(&[u8], Option<u16>)] = &[
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Some(405)),
            (b"\x16\x03\x01garbage\r\n\r\n", Some(400)),
            (b"CONNECT node-a HTTP/1.1\r\n\r\n", Some(400)),
            (b"CONNECT node-a:99999 HTTP/1.1\r\n\r\n", Some(400)),
            (b"CONNECT ::1:443 HTTP/1.1\r\n\r\n", Some(400)),
            (b"CONNECT [zz]:443 HTTP/1.1\r\n\r\n", Some(400)),
            (b"CONNECT a/b:443 HTTP/1.1\r\n\r\n", Some(400)),
            (b"CONNECT node-a:1 SPDY/3\r\n\r\n", Some(400)),
            (b"CONNECT node-a:10250 HTTP/1.1\r\n", None),
        ];
        for (input, status) in cases {
            let got = read_str(input, 8192).await.unwrap_err();
            assert_eq!(
                got.http_status(),
                *status,
                "{:?}: {got}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[tokio::test]
    async fn oversized_head_is_refused_without_reading_it_all() {
        let mut huge = b"CONNECT node-a:1 HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'x', 100_000));
        let e = read_str(&huge, 4096).await.unwrap_err();
        assert_eq!(e.http_status(), Some(400));
        assert!(e.to_string().contains("egress.max_request_head"), "{e}");
        let mut get = b"GET /".to_vec();
        get.extend(std::iter::repeat_n(b'x', 10_000));
        assert_eq!(
            read_str(&get, 4096).await.unwrap_err().http_status(),
            Some(405)
        );
    }
}
