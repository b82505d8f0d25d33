use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::*;
use sshbridge_report::fixtures::report;

const LIMIT: Duration = Duration::from_secs(10);

/// Serves one connection on a unix socket in a fresh tempdir: reads the
/// request head, answers `response` (or nothing when `None`), closes.
/// Yields the request head it saw.
fn serve_once(
    response: Option<Vec<u8>>,
) -> (tempfile::TempDir, AdminAddr, oneshot::Receiver<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
        match response {
            Some(r) => {
                s.write_all(&r).await.unwrap();
                s.shutdown().await.unwrap();
            }
            // Hold the connection open without answering.
            None => std::future::pending::<()>().await,
        }
    });
    (dir, AdminAddr::Unix(path), rx)
}

#[tokio::test]
async fn fetches_a_report_with_content_length() {
    let body = report(&["node-a", "node-b"]).to_json();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (_dir, addr, request) = serve_once(Some(response.into_bytes()));
    let r = timeout(LIMIT, fetch_report(&addr, LIMIT))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r, report(&["node-a", "node-b"]));
    let request = timeout(LIMIT, request).await.unwrap().unwrap();
    assert!(request.starts_with("GET /report HTTP/1.1\r\n"), "{request}");
    assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
    assert!(request.contains("\r\nHost: "), "{request}");
}

#[tokio::test]
async fn fetches_a_chunked_body() {
    let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
        .to_vec();
    let (_dir, addr, _) = serve_once(Some(response));
    let body = timeout(LIMIT, get(&addr, "/livez", LIMIT))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body, b"hello, world");
}

#[tokio::test]
async fn fetches_a_close_delimited_body() {
    let (_dir, addr, _) = serve_once(Some(b"HTTP/1.0 200 OK\r\n\r\nok\n".to_vec()));
    let body = timeout(LIMIT, get(&addr, "/livez", LIMIT))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body, b"ok\n");
}

#[tokio::test]
async fn error_status_names_address_status_and_body() {
    let response =
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 14\r\n\r\nstill starting".to_vec();
    let (_dir, addr, _) = serve_once(Some(response));
    let err = timeout(LIMIT, fetch_report(&addr, LIMIT))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Status { status: 503, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&addr.to_string()) && msg.contains("still starting"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_body_that_is_not_a_report_names_the_address() {
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec();
    let (_dir, addr, _) = serve_once(Some(response));
    let err = timeout(LIMIT, fetch_report(&addr, LIMIT))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("report from {addr}")),
        "{err}"
    );
}

#[tokio::test]
async fn missing_socket_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let addr = AdminAddr::Unix(dir.path().join("nope.sock"));
    let err = timeout(LIMIT, get(&addr, "/report", LIMIT))
        .await
        .unwrap()
        .unwrap_err();
    let msg = err.to_string();
    let expected = format!(
        "cannot reach the sshbridge admin API at {addr}: No such file or directory; \
         is `sshbridge run` running? use --admin"
    );
    assert_eq!(msg, expected);
}

#[tokio::test]
async fn refused_tcp_port_names_the_address() {
    // Bind then drop, so the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: AdminAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let err = timeout(LIMIT, get(&addr, "/report", LIMIT))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn silent_server_times_out() {
    let (_dir, addr, _) = serve_once(None);
    let err = timeout(
        Duration::from_secs(60),
        get(&addr, "/report", Duration::from_secs(10)),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(
        err.to_string().contains("did not answer within 10s"),
        "{err}"
    );
}

#[tokio::test]
async fn garbage_is_a_malformed_response() {
    let (_dir, addr, _) = serve_once(Some(b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()));
    let err = timeout(LIMIT, get(&addr, "/report", LIMIT))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ClientError::Malformed { .. }), "{err:?}");
}

#[test]
fn addresses_parse_and_display() {
    let unix: AdminAddr = "unix:/run/sshbridge/admin.sock".parse().unwrap();
    assert_eq!(unix, AdminAddr::Unix("/run/sshbridge/admin.sock".into()));
    assert_eq!(unix.to_string(), "unix:/run/sshbridge/admin.sock");
    let tcp: AdminAddr = "127.0.0.1:8133".parse().unwrap();
    assert_eq!(tcp.to_string(), "127.0.0.1:8133");
    assert!("[::1]:8133".parse::<AdminAddr>().is_ok());
    for bad in ["unix:", "localhost", "127.0.0.1:http", ":80"] {
        assert!(bad.parse::<AdminAddr>().is_err(), "{bad}");
    }
}

#[tokio::test]
async fn short_content_length_body_is_malformed() {
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec();
    let (_dir, addr, _) = serve_once(Some(response));
    let err = timeout(LIMIT, get(&addr, "/report", LIMIT))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ClientError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
