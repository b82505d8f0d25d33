//! Flow control of the Konnectivity path: a connection nobody reads holds
//! the others only until the agent server's stall timeout, and a download
//! faster than its reader arrives whole.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sshbridge::konnectivity::proto::packet::Payload;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kit::{connect_agent, echo_server, firehose_server, pattern, within, Answer, Bridge};
use crate::MIB;

/// The agent server's `stall_timeout` in [`Bridge::start`].
const STALL: Duration = Duration::from_secs(1);

/// Writes `sent` on `stream` while reading the echo back; bounded.
async fn echo_through<S>(stream: &mut S, sent: &[u8], what: &str) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = async { wr.write_all(sent).await.unwrap() };
    let mut got = vec![0u8; sent.len()];
    let reader = rd.read_exact(&mut got);
    within(what, async { tokio::join!(writer, reader).1.unwrap() }).await;
    got
}

#[tokio::test]
async fn a_connection_never_read_holds_the_others_only_until_the_stall_timeout() {
    let limit = MIB;
    let bridge = Bridge::start(false, limit).await.unwrap();
    let mut agent = connect_agent(&bridge, &["a1"], "host=node-a", false, Answer::Dial)
        .await
        .unwrap();
    bridge.wait_live("node-a", 1).await;
    let (firehose, echo) = (firehose_server().await, echo_server().await);
    let sent = pattern(8 * MIB);
    // What the busy echo takes on this machine with nothing stalled.
    let alone = {
        let started = Instant::now();
        let mut s = within("dial", bridge.hub.dial("node-a", "127.0.0.1", echo.port()))
            .await
            .unwrap();
        let got = echo_through(&mut s, &sent, "8 MiB alone").await;
        assert!(got == sent, "bytes changed on the way");
        started.elapsed()
    };
    // Dialed first: a dial answer waits behind a stall like data does.
    let mut busy = within("dial", bridge.hub.dial("node-a", "127.0.0.1", echo.port()))
        .await
        .unwrap();
    // Never read: the firehose fills its buffer at once.
    let mut stalled = within(
        "dial",
        bridge.hub.dial("node-a", "127.0.0.1", firehose.port()),
    )
    .await
    .unwrap();
    // Small echoes back to back on another connection of the same agent,
    // from before the stalled connection fills until after it is cut: the
    // longest wait for one of them is how long the stall held the others.
    let cut = AtomicBool::new(false);
    let pings = async {
        let (mut longest, mut after_cut, mut n) = (Duration::ZERO, 0, 0u64);
        while after_cut < 3 {
            let started = Instant::now();
            let msg = n.to_be_bytes();
            busy.write_all(&msg).await.unwrap();
            let mut back = [0u8; 8];
            busy.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg, "echo {n} came back different");
            longest = longest.max(started.elapsed());
            after_cut += u32::from(cut.load(Ordering::Acquire));
            n += 1;
        }
        longest
    };
    // The stalled connection is cut, not buffered without bound.
    let watch = async {
        loop {
            if let Some(Payload::CloseRequest(c)) = agent.next_seen().await.payload {
                // 1 was the echo alone, 2 the busy one, 3 the stalled one.
                if c.connect_id == 3 {
                    return cut.store(true, Ordering::Release);
                }
            }
        }
    };
    let (longest, ()) = within("echoes beside a stalled connection", async {
        tokio::join!(pings, watch)
    })
    .await;
    let slack = Duration::from_secs(2);
    assert!(
        longest <= STALL + slack,
        "an echo beside the stalled connection waited {longest:?}; the stall timeout \
         is {STALL:?}"
    );
    // Then bulk data moves at its usual pace (with room for a busy machine).
    let started = Instant::now();
    let got = echo_through(
        &mut busy,
        &sent,
        "8 MiB after the stalled connection was cut",
    )
    .await;
    let took = started.elapsed();
    assert!(got == sent, "bytes changed on the way");
    let bound = (alone * 3).max(Duration::from_secs(3));
    assert!(
        took <= bound,
        "8 MiB took {took:?} after the cut, {alone:?} before the stall"
    );
    assert_eq!(bridge.hub.stats("node-a").overflow_closes, 1);
    let mut sink = vec![0u8; 64 * 1024];
    let err = within("drain the stalled connection", async {
        loop {
            match stalled.read(&mut sink).await {
                Ok(0) => panic!("an overflowed connection must end with an error"),
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    })
    .await;
    assert!(err.to_string().contains("took no bytes for 1s"), "{err}");
}

#[tokio::test]
async fn a_download_faster_than_its_reader_arrives_whole() {
    let limit = 256 * 1024;
    let bridge = Bridge::start(false, limit).await.unwrap();
    let _agent = connect_agent(&bridge, &["a1"], "host=node-a", false, Answer::Dial)
        .await
        .unwrap();
    bridge.wait_live("node-a", 1).await;
    let echo = echo_server().await;
    let mut stream = within("dial", bridge.hub.dial("node-a", "127.0.0.1", echo.port()))
        .await
        .unwrap();
    // 4 MiB through a 256 KiB buffer, read in small slow steps: the agent
    // stream waits for this reader instead of cutting it off.
    let sent = pattern(4 * MIB);
    let (mut rd, mut wr) = tokio::io::split(&mut stream);
    let writer = async { wr.write_all(&sent).await.unwrap() };
    let reader = async {
        let mut got = Vec::with_capacity(sent.len());
        let mut buf = vec![0u8; 16 * 1024];
        while got.len() < sent.len() {
            let n = rd.read(&mut buf).await.unwrap();
            assert!(n > 0, "ended after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        got
    };
    let got = within("4 MiB to a slow reader", async {
        tokio::join!(writer, reader).1
    })
    .await;
    assert!(got == sent, "bytes changed on the way");
    assert_eq!(bridge.hub.stats("node-a").overflow_closes, 0);
}
