//! Flow control on simulated channels: a bounded queue stands in for
//! russh's per-channel queue (which must never fill up), and a simulated
//! node sends only as much as its window credit allows.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::*;

const T: Duration = Duration::from_secs(5);

/// Credit goes back to the simulated node's window.
struct Window(Arc<Semaphore>);

impl CreditSink for Window {
    async fn credit(&mut self, bytes: u32) {
        self.0.add_permits(bytes as usize);
    }
}

struct Sim {
    /// What russh's session loop would push; bounded like its queue.
    tx: mpsc::Sender<Incoming>,
    /// The node's send window (bytes it may still send).
    window: Arc<Semaphore>,
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
    let window = Arc::new(Semaphore::new(limit));
    let stream = SshStream::new(
        buf.clone(),
        Box::pin(writer),
        counters.clone(),
        gone.clone(),
    );
    let (c, mut sink) = (counters.clone(), Window(window.clone()));
    let pump = tokio::spawn(async move {
        let events = Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|ev| (ev, rx))
        }));
        pump(events, &buf, limit, &c, &gone, &mut sink).await
    });
    Sim {
        tx,
        window,
        stream,
        target,
        pump,
        counters,
    }
}

/// A node that honours its window: sends `total` bytes in `chunk`-sized
/// packets, each only once the window has room. Returns bytes sent so far.
fn node_sends(
    s: &Sim,
    total: usize,
    chunk: usize,
) -> (JoinHandle<()>, Arc<std::sync::atomic::AtomicUsize>) {
    let (tx, window) = (s.tx.clone(), s.window.clone());
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let task = tokio::spawn(async move {
        let mut left = total;
        while left > 0 {
            let n = chunk.min(left);
            window
                .acquire_many(n as u32)
                .await
                .expect("window open")
                .forget();
            let data = Bytes::from(vec![(left % 251) as u8; n]);
            tokio::time::timeout(T, tx.send(Incoming::Data(data)))
                .await
                .expect("the channel queue must never fill")
                .expect("pump alive");
            left -= n;
            counter.fetch_add(n, Ordering::SeqCst);
        }
    });
    (task, sent)
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_stops_holds_one_window_and_stalls_only_its_own_sender() {
    let window = 64 * 1024;
    let total = 1024 * 1024;
    let mut slow = sim(window);
    let mut fast = sim(window);
    let (slow_sender, slow_sent) = node_sends(&slow, total, 4096);
    // The other stream on the same node moves all its bytes meanwhile.
    let (fast_sender, _) = node_sends(&fast, total, 4096);
    let mut got = Vec::new();
    tokio::time::timeout(T, fast.stream.read_to_end_or(&mut got, total))
        .await
        .expect("the other stream flows while one reader is stalled");
    assert_eq!(got.len(), total);
    fast_sender.await.expect("fast sender done");
    // Nobody read the slow stream: its node sent exactly one window, then
    // waits for credit instead of piling data up.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(slow_sent.load(Ordering::SeqCst), window);
    assert!(!slow_sender.is_finished());
    assert!(
        !slow.pump.is_finished(),
        "no reset: a slow reader is not an error"
    );
    // Once the client reads again, every byte arrives, in order.
    let mut all = Vec::new();
    tokio::time::timeout(T, slow.stream.read_to_end_or(&mut all, total))
        .await
        .expect("the slow stream catches up");
    slow_sender.await.expect("slow sender done");
    let expected: Vec<u8> = (0..total / 4096)
        .flat_map(|i| vec![((total - i * 4096) % 251) as u8; 4096])
        .collect();
    assert!(all == expected, "bytes of the stalled stream arrive intact");
    assert_eq!(
        slow.counters.bytes_received.load(Ordering::Relaxed),
        total as u64
    );
}

#[tokio::test]
async fn a_node_that_sends_past_its_window_gets_the_stream_reset() {
    let limit = 16 * 1024;
    let mut s = sim(limit);
    for _ in 0..2 {
        let data = Bytes::from(vec![1u8; limit / 2]);
        s.tx.send(Incoming::Data(data)).await.expect("pump alive");
    }
    let _ = s.tx.send(Incoming::Data(Bytes::from_static(b"x"))).await;
    let end = tokio::time::timeout(T, &mut s.pump)
        .await
        .expect("pump ends")
        .expect("join");
    assert_eq!(
        end,
        PumpEnd::Reset {
            buffered: limit + 1
        }
    );
    let err = tokio::time::timeout(T, s.stream.read(&mut [0u8; 16]))
        .await
        .expect("read in time")
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert!(err.to_string().contains("sent past its window"), "{err}");
}

#[tokio::test]
async fn remote_eof_ends_reads_while_writes_keep_working() {
    let mut s = sim(1024 * 1024);
    s.tx.send(Incoming::Data(Bytes::from_static(b"hello")))
        .await
        .expect("send");
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
async fn reading_returns_credit_to_the_node() {
    let mut s = sim(1000);
    s.window.acquire_many(1000).await.expect("window").forget();
    s.tx.send(Incoming::Data(Bytes::from(vec![9u8; 1000])))
        .await
        .expect("send");
    // 100 bytes read is under a quarter window: held back, not sent.
    let mut small = vec![0u8; 100];
    tokio::time::timeout(T, s.stream.read_exact(&mut small))
        .await
        .expect("in time")
        .expect("read");
    tokio::task::yield_now().await;
    assert_eq!(s.window.available_permits(), 0, "credit is batched");
    let mut part = vec![0u8; 500];
    tokio::time::timeout(T, s.stream.read_exact(&mut part))
        .await
        .expect("in time")
        .expect("read");
    let credit = tokio::time::timeout(T, s.window.acquire_many(600))
        .await
        .expect("credit for the 600 bytes read");
    credit.expect("window open").forget();
    assert_eq!(
        s.window.available_permits(),
        0,
        "no credit for unread bytes"
    );
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

/// Reads until `len` bytes arrived (the simulated node never sends EOF).
trait ReadExactly {
    async fn read_to_end_or(&mut self, out: &mut Vec<u8>, len: usize);
}

impl ReadExactly for SshStream {
    async fn read_to_end_or(&mut self, out: &mut Vec<u8>, len: usize) {
        let mut buf = vec![0u8; 8192];
        while out.len() < len {
            let n = self.read(&mut buf).await.expect("read");
            assert!(n > 0, "unexpected EOF after {} bytes", out.len());
            out.extend_from_slice(&buf[..n]);
        }
    }
}

/// Empty data messages never queue, and a trickle of one-byte messages is
/// compacted so the queue never holds more than `max_chunks` (+ the new
/// one) chunks; the bytes come out intact and in order.
#[test]
fn empty_chunks_never_queue_and_small_ones_are_compacted() {
    let buf = RecvBuffer::new(8);
    for _ in 0..10_000 {
        assert_eq!(buf.push(Bytes::new(), 1 << 20), Ok(Pushed::Queued));
    }
    assert_eq!(buf.chunks(), 0, "empty chunks grew the buffer");
    let mut compactions = 0;
    for i in 0..1000u32 {
        let byte = Bytes::from(vec![(i % 251) as u8]);
        if buf.push(byte, 1 << 20) == Ok(Pushed::Compacted) {
            compactions += 1;
        }
        assert!(buf.chunks() <= 9, "{} chunks queued", buf.chunks());
    }
    assert!(compactions >= 100, "{compactions}");
    let all: Vec<u8> = buf
        .lock()
        .chunks
        .iter()
        .flat_map(|c| c.iter().copied())
        .collect();
    let want: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(all, want);
    assert_eq!(buf.lock().len, 1000);
}
