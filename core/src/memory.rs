//! Giving freed memory back to the system.
//!
//! glibc's allocator keeps memory a process has freed in its heaps and
//! rarely returns it: after a burst of 1,000 streams the bridge's RSS
//! stayed at 4x its idle size although every stream was gone (measured by
//! `scripts/bench`, where `malloc_trim(0)` brought it back to 1.3x). The
//! daemon therefore asks glibc to trim its heaps after streams close (looking four times a second).
//! Elsewhere (other C libraries) this is a no-op.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the number of open streams is looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Returns freed heap memory to the system whenever streams have closed
/// since the last look (every [`CHECK_INTERVAL`]), until `stop` is
/// cancelled. `open` counts the open streams; `trim` is [`trim`] outside
/// tests.
pub async fn trim_after_streams_close(
    open: impl Fn() -> usize,
    trim: impl Fn(),
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = open();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = open();
        if now < last {
            trim();
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn trims_once_per_check_in_which_streams_closed() {
        let open = Arc::new(AtomicUsize::new(0));
        let trims = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (o, t) = (open.clone(), trims.clone());
        let task = tokio::spawn(trim_after_streams_close(
            move || o.load(Ordering::SeqCst),
            move || {
                t.fetch_add(1, Ordering::SeqCst);
            },
            stop.clone(),
        ));
        let step = |n: usize| {
            open.store(n, Ordering::SeqCst);
            tokio::time::sleep(CHECK_INTERVAL)
        };
        step(100).await; // streams opened: nothing to give back
        step(100).await;
        assert_eq!(trims.load(Ordering::SeqCst), 0);
        step(40).await; // 60 closed
        step(0).await; // the rest closed
        step(0).await; // idle: no more trims
        assert_eq!(trims.load(Ordering::SeqCst), 2);
        stop.cancel();
        task.await.unwrap();
    }
}
