use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::*;

#[tokio::test]
async fn a_buffer_grows_only_while_reads_fill_it() {
    let (mut tx, mut rx) = duplex(1 << 20);
    tx.write_all(&vec![7u8; 200 * 1024]).await.unwrap();
    let mut buf = Growing::new(64 * 1024);
    let mut sizes = Vec::new();
    for _ in 0..6 {
        let n = buf.read(&mut rx).await.unwrap().len();
        sizes.push(n);
    }
    assert_eq!(
        sizes,
        [4096, 8192, 16384, 32768, 65536, 65536],
        "each full read doubles the next one, up to the maximum"
    );

    // A short read (all that is there) leaves the size as it was.
    let (mut tx, mut rx) = duplex(1 << 20);
    let mut buf = Growing::new(64 * 1024);
    tx.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(buf.read(&mut rx).await.unwrap(), b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(buf.size(), START);
    drop(tx);
    assert!(buf.read(&mut rx).await.unwrap().is_empty(), "end of stream");
}

#[tokio::test]
async fn read_some_reads_at_most_max() {
    let (mut tx, mut rx) = duplex(1 << 16);
    tx.write_all(&[1u8; 1000]).await.unwrap();
    let mut buf = vec![9u8; 5];
    assert_eq!(read_some(&mut rx, &mut buf, 300).await.unwrap(), 300);
    assert_eq!(buf, vec![1u8; 300], "cleared, then filled by the read only");
    assert_eq!(read_some(&mut rx, &mut buf, 1 << 16).await.unwrap(), 700);
}

#[tokio::test]
async fn both_directions_are_copied_and_half_closes_pass_through() {
    // client <-> (a | bridge copy | b) <-> server
    let (mut client, mut a) = duplex(1 << 16);
    let (mut b, mut server) = duplex(1 << 16);
    let copy = tokio::spawn(async move { bidirectional(&mut a, &mut b, 64 * 1024).await });

    let body = vec![5u8; 300 * 1024];
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"request", "the server sees the request, then its end");

    // The other direction still flows after the client's half close.
    let sent = body.clone();
    let writer = tokio::spawn(async move {
        server.write_all(&sent).await.unwrap();
        server.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    client.read_to_end(&mut back).await.unwrap();
    assert_eq!(back.len(), body.len());
    assert!(back == body);
    writer.await.unwrap();
    assert_eq!(copy.await.unwrap().unwrap(), (7, 300 * 1024));
}

/// A reader that fails.
struct Broken;

impl AsyncRead for Broken {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(std::io::Error::other("reset by peer")))
    }
}

impl AsyncWrite for Broken {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn an_error_on_one_side_ends_the_copy() {
    // The client side stays open and silent: only the error can end it.
    let (_client, mut a) = duplex(1 << 16);
    let mut b = Broken;
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        bidirectional(&mut a, &mut b, 64 * 1024),
    )
    .await
    .expect("the copy ends");
    assert_eq!(r.unwrap_err().to_string(), "reset by peer");
}
