//! The slow-reader policy on simulated channels: a bounded queue stands in
//! for russh's per-channel queue (the thing that must never fill up).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::*;

const T: Duration = Duration::from_secs(5);

struct Sim {
    /// What russh's session loop would push; bounded like its queue.
    tx: mpsc::Sender<Incoming>,
    stream: SshStream,
    /// The target's view of what the client wrote.
    target: DuplexStream,
    pump: JoinHandle<PumpEnd>,
    counters: Arc<Counters>,
}

fn sim(limit: usize) -> Sim {
    let (tx, rx) = mpsc::channel(2);
    let (writer, target) = tokio::io::duplex(64 * 1024);
    let buf = Arc::new(RecvBuffer::default());
    let counters = Arc::new(Counters::default());
    let gone = CancellationToken::new();
    let stream = SshStream::new(
        buf.clone(),
        Box::pin(writer),
        counters.clone(),
        gone.clone(),
    );
    let c = counters.clone();
    let pump = tokio::spawn(async move {
        let events = tokio_stream_from(rx);
        pump(events, &buf, limit, &c, &gone).await
    });
    Sim {
        tx,
        stream,
        target,
        pump,
        counters,
    }
}

fn tokio_stream_from(rx: mpsc::Receiver<Incoming>) -> impl FutStream<Item = Incoming> + Unpin {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|ev| (ev, rx))
    }))
}

async fn send(tx: &mpsc::Sender<Incoming>, data: &[u8]) {
    tokio::time::timeout(T, tx.send(Incoming::Data(Bytes::copy_from_slice(data))))
        .await
        .expect("the pump must keep draining the channel queue")
        .expect("pump alive");
}

#[tokio::test]
async fn slow_reader_is_reset_without_stalling_its_channel_or_others() {
    let limit = 256 * 1024;
    let mut slow = sim(limit);
    let mut fast = sim(limit);
    let chunk = vec![7u8; 32 * 1024];
    // Far more than the limit into the stream nobody reads, interleaved
    // with traffic on the other stream that is read as it comes.
    let mut got = Vec::new();
    for i in 0..40u8 {
        if !slow.pump.is_finished() {
            let _ =
                tokio::time::timeout(T, slow.tx.send(Incoming::Data(Bytes::from(chunk.clone()))))
                    .await
                    .expect("queue of the unread stream must never fill");
        }
        send(&fast.tx, &[i; 1000]).await;
        let mut part = vec![0u8; 1000];
        tokio::time::timeout(T, fast.stream.read_exact(&mut part))
            .await
            .expect("fast stream read in time")
            .expect("fast stream read");
        got.extend_from_slice(&part);
    }
    let end = tokio::time::timeout(T, &mut slow.pump)
        .await
        .expect("pump ends")
        .expect("join");
    assert_eq!(
        end,
        PumpEnd::Reset {
            buffered: limit + chunk.len()
        }
    );
    let err = tokio::time::timeout(T, slow.stream.read(&mut [0u8; 16]))
        .await
        .expect("read in time")
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert!(
        err.to_string().contains("client stopped reading")
            && err.to_string().contains("ssh.max_stream_buffer"),
        "{err}"
    );
    let expected: Vec<u8> = (0..40u8).flat_map(|i| [i; 1000]).collect();
    assert_eq!(got, expected, "the other stream's bytes arrive intact");
    assert!(!fast.pump.is_finished());
    assert_eq!(fast.counters.bytes_received.load(Ordering::Relaxed), 40_000);
}

#[tokio::test]
async fn remote_eof_ends_reads_while_writes_keep_working() {
    let mut s = sim(1024 * 1024);
    send(&s.tx, b"hello").await;
    s.tx.send(Incoming::Eof).await.expect("send eof");
    let mut all = Vec::new();
    tokio::time::timeout(T, s.stream.read_to_end(&mut all))
        .await
        .expect("read to eof in time")
        .expect("read");
    assert_eq!(all, b"hello");
    s.stream
        .write_all(b"still here")
        .await
        .expect("write after remote eof");
    s.stream.shutdown().await.expect("shutdown sends eof");
    let mut back = Vec::new();
    tokio::time::timeout(T, s.target.read_to_end(&mut back))
        .await
        .expect("target sees eof in time")
        .expect("target read");
    assert_eq!(back, b"still here");
    assert_eq!(s.counters.bytes_sent.load(Ordering::Relaxed), 10);
    assert!(
        !s.pump.is_finished(),
        "EOF is not close: the pump waits for Close"
    );
    drop(s.tx);
    let end = tokio::time::timeout(T, s.pump)
        .await
        .expect("pump ends")
        .expect("join");
    assert_eq!(end, PumpEnd::Closed);
}

#[tokio::test]
async fn buffered_data_is_read_before_eof_and_within_limit_is_kept() {
    let mut s = sim(10);
    send(&s.tx, b"0123456789").await;
    s.tx.send(Incoming::Eof).await.expect("eof");
    let mut all = Vec::new();
    tokio::time::timeout(T, s.stream.read_to_end(&mut all))
        .await
        .expect("in time")
        .expect("exactly the limit is not a reset");
    assert_eq!(all, b"0123456789");
}

#[tokio::test]
async fn dropping_the_stream_tells_the_pump_to_close_the_channel() {
    let s = sim(1024);
    drop(s.stream);
    let end = tokio::time::timeout(T, s.pump)
        .await
        .expect("pump ends")
        .expect("join");
    assert_eq!(end, PumpEnd::ReaderGone);
}
