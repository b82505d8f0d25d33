//! Giving freed memory back to the system.
//!
//! glibc's allocator keeps memory a process has freed in its heaps and
//! rarely returns it: after a burst of 1,000 streams the bridge's RSS
//! stayed at 4x its idle size although every stream was gone (measured by
//! `scripts/bench`, where `malloc_trim(0)` brought it back to 1.3x). The
//! daemon therefore asks glibc to trim its heaps after streams close
//! (looking four times a second), and once more when no stream has closed
//! for [`SETTLE_CHECKS`] looks: what a closed stream leaves to free (its
//! SSH channel's close exchange, the session's buffers given back after a
//! run of small packets) is freed after the stream's task ends, and a
//! trim that only followed the count would miss it.
//!
//! It follows how many streams have *closed*, not how many are open: a
//! burst that opened and closed between two looks leaves the open count
//! unchanged, and when the trim followed that count such bursts were never
//! trimmed (the bench's after-close RSS read 2.5x idle in about one run in
//! three). Elsewhere (other C libraries) this is a no-op.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the number of closed streams is looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Looks without a close after which the last trim of a wave is made.
pub const SETTLE_CHECKS: u32 = 2;

/// Returns freed heap memory to the system whenever streams have closed
/// since the last look (every [`CHECK_INTERVAL`]), and once more
/// [`SETTLE_CHECKS`] quiet looks after the last such close, until `stop` is
/// cancelled. `closed` counts the streams closed so far (it only grows);
/// `trim` is [`trim`] outside tests.
pub async fn trim_after_streams_close(
    closed: impl Fn() -> u64,
    trim: impl Fn(),
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = closed();
    // Quiet looks left before the settling trim; 0 when none is due.
    let mut settle = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = closed();
        if now != last {
            trim();
            settle = SETTLE_CHECKS;
        } else if settle > 0 {
            settle -= 1;
            if settle == 0 {
                trim();
            }
        }
        last = now;
    }
}

/// Returns freed heap memory to the system now.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // No safe binding of malloc_trim exists (nix has none); this is the
    // crate's only unsafe code.
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only walks glibc's own heap structures under the
    // allocator's locks; it takes no pointers from us and is safe to call
    // from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn trims_once_per_check_in_which_streams_closed() {
        let closed = Arc::new(AtomicU64::new(0));
        let trims = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (c, t) = (closed.clone(), trims.clone());
        let task = tokio::spawn(trim_after_streams_close(
            move || c.load(Ordering::SeqCst),
            move || {
                t.fetch_add(1, Ordering::SeqCst);
            },
            stop.clone(),
        ));
        let step = |n: u64| {
            closed.store(n, Ordering::SeqCst);
            tokio::time::sleep(CHECK_INTERVAL)
        };
        step(0).await; // streams open, none closed: nothing to give back
        step(0).await;
        assert_eq!(trims.load(Ordering::SeqCst), 0);
        step(60).await; // 60 closed
        step(100).await; // the rest closed
        assert_eq!(trims.load(Ordering::SeqCst), 2);
        for _ in 0..SETTLE_CHECKS {
            step(100).await; // quiet: the settling trim comes on the last
        }
        assert_eq!(trims.load(Ordering::SeqCst), 3);
        for _ in 0..4 * SETTLE_CHECKS {
            step(100).await; // idle: no more trims
        }
        assert_eq!(trims.load(Ordering::SeqCst), 3);
        // A burst that opened and closed 1,000 streams between two looks:
        // the open count is the same at both, the closed count is not.
        step(1100).await;
        assert_eq!(trims.load(Ordering::SeqCst), 4);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the trim task stops when cancelled")
            .unwrap();
    }
}
