//! Guards on what every idle tunnel pays for (issue 20, goal 5).
//!
//! russh gives each session four tokio queues of its `client::Msg`, and
//! tokio allocates a queue's first block of 32 slots when the queue is
//! made: 32 x `size_of::<Msg>()` bytes per queue for as long as the
//! session lives, used or not. Our vendored russh boxes the rarely sent
//! large payloads (an authentication method may hold a whole certificate),
//! so a `Msg` stays small and so do the blocks.

/// Bytes one `Msg` may take (136 in a debug build with the boxing, 552
/// without): the three `Msg` queues of a session then cost at most
/// 3 x 32 x 160 = 15 KiB, against 52 KiB in a debug build and 26 KiB in
/// release before the boxing.
const MSG_BUDGET: usize = 160;

#[test]
fn a_session_message_stays_small() {
    let size = std::mem::size_of::<russh::client::Msg>();
    assert!(
        size <= MSG_BUDGET,
        "russh::client::Msg is {size} bytes (budget {MSG_BUDGET}): box the new large variant"
    );
}
