//! The sshbridge extensions of the Konnectivity wire protocol and the flow
//! control pieces both ends share (docs/konnectivity.md):
//!
//! - [`Extensions`]: what a peer announced in the `sshbridge-ext`
//!   metadata; an extension is used only when both ends announced it, so
//!   upstream agents and servers never see a packet they do not know.
//! - [`CreditGate`]: the bytes one side may still send on a connection
//!   (extension `credit`).
//! - [`StallBudget`]: in compatibility mode, how long one connection's
//!   reader has kept the shared stream waiting within a window.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::time::Instant;

/// Metadata key listing the extensions a side speaks, comma-separated.
pub const EXT_HEADER: &str = "sshbridge-ext";
/// Metadata key with the receive window (bytes) a side grants each new
/// connection when `credit` is in use.
pub const WINDOW_HEADER: &str = "sshbridge-credit-window";

/// Default per-connection receive window of the `credit` extension. With
/// credit returned in quarter-window batches, one connection moves about a
/// window per round trip. Measured with `scripts/bench --only konn`: 1 MiB
/// cost a bulk upload 20-30 % of its throughput (214-262 MiB/s against
/// 320 without credit); 4 MiB gave 301-316. It is also the bound of a
/// compatibility-mode connection's buffer, so what a reader that stops can
/// hold is unchanged.
pub const DEFAULT_CREDIT_WINDOW: usize = 4 << 20;

/// The extensions of one side, or of both (their intersection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extensions {
    /// `half-close`: HALF_CLOSE packets, TCP's FIN per connection.
    pub half_close: bool,
    /// `credit`: CREDIT packets, a window per connection.
    pub credit: bool,
}

impl Extensions {
    /// Everything this version speaks.
    pub const ALL: Extensions = Extensions {
        half_close: true,
        credit: true,
    };
    /// Nothing: an upstream peer, or extensions turned off.
    pub const NONE: Extensions = Extensions {
        half_close: false,
        credit: false,
    };

    /// Parses the values of [`EXT_HEADER`]; unknown names are ignored (a
    /// newer peer may speak more).
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Extensions {
        let mut ext = Extensions::NONE;
        for name in values.into_iter().flat_map(|v| v.split(',')) {
            match name.trim() {
                "half-close" => ext.half_close = true,
                "credit" => ext.credit = true,
                _ => {}
            }
        }
        ext
    }

    /// The value of [`EXT_HEADER`]; empty for none.
    pub fn header(self) -> String {
        let mut names = Vec::new();
        if self.half_close {
            names.push("half-close");
        }
        if self.credit {
            names.push("credit");
        }
        names.join(",")
    }

    /// What both sides announced.
    pub fn both(self, other: Extensions) -> Extensions {
        Extensions {
            half_close: self.half_close && other.half_close,
            credit: self.credit && other.credit,
        }
    }

    /// The flow-control mode as reports name it: `credit` or
    /// `compatibility`.
    pub fn mode(self) -> &'static str {
        if self.credit {
            "credit"
        } else {
            "compatibility"
        }
    }
}

/// What a peer announced in `md`: its extensions and, with `credit`, its
/// receive window (`None` when missing or too small).
pub fn announced(md: &tonic::metadata::MetadataMap) -> (Extensions, Option<usize>) {
    let ext = Extensions::parse(
        md.get_all(EXT_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let window = parse_window(md.get(WINDOW_HEADER).and_then(|v| v.to_str().ok()));
    (ext, window)
}

/// Announces `ext` (and with `credit`, our receive `window`) in `md`.
/// Nothing is added for no extension, so an upstream peer sees exactly
/// upstream's metadata.
pub fn announce(md: &mut tonic::metadata::MetadataMap, ext: Extensions, window: usize) {
    if ext == Extensions::NONE {
        return;
    }
    if let Ok(v) = ext.header().parse() {
        md.insert(EXT_HEADER, v);
    }
    if ext.credit {
        md.insert(
            WINDOW_HEADER,
            tonic::metadata::MetadataValue::from(window as u64),
        );
    }
}

/// Parses [`WINDOW_HEADER`]: a window of at least one chunk, else `None`.
pub fn parse_window(value: Option<&str>) -> Option<usize> {
    let w: usize = value?.trim().parse().ok()?;
    (w >= MIN_WINDOW).then_some(w)
}

/// Smallest window a peer may announce: one full DATA chunk.
pub const MIN_WINDOW: usize = 32 * 1024;

/// The bytes a side may still send on one connection: starts at the
/// peer's window, shrinks as DATA goes out, grows with each CREDIT. A
/// writer with no credit waits here, and only its own connection waits.
#[derive(Debug)]
pub struct CreditGate {
    avail: AtomicU64,
    waker: AtomicWaker,
}

impl CreditGate {
    /// A gate holding `initial` bytes of credit.
    pub fn new(initial: usize) -> CreditGate {
        CreditGate {
            avail: AtomicU64::new(initial as u64),
            waker: AtomicWaker::new(),
        }
    }

    /// Adds credit from a CREDIT packet and wakes the writer.
    pub fn grant(&self, bytes: u64) {
        let _ = self
            .avail
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                Some(a.saturating_add(bytes))
            });
        self.waker.wake();
    }

    /// Wakes a waiting writer without credit (the connection closed).
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Takes up to `want` bytes of credit; pending while there is none.
    pub fn poll_take(&self, cx: &mut Context<'_>, want: usize) -> Poll<usize> {
        if let Some(n) = self.try_take(want) {
            return Poll::Ready(n);
        }
        self.waker.register(cx.waker());
        match self.try_take(want) {
            Some(n) => Poll::Ready(n),
            None => Poll::Pending,
        }
    }

    /// Takes up to `want` bytes, waiting for credit.
    pub async fn take(&self, want: usize) -> usize {
        std::future::poll_fn(|cx| self.poll_take(cx, want)).await
    }

    /// Returns credit taken but not used.
    pub fn put_back(&self, bytes: usize) {
        if bytes > 0 {
            self.grant(bytes as u64);
        }
    }

    fn try_take(&self, want: usize) -> Option<usize> {
        let mut taken = 0;
        self.avail
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                taken = a.min(want as u64);
                (taken > 0).then_some(a - taken)
            })
            .ok()
            .map(|_| taken as usize)
    }
}

/// How much a receiver holds back before granting: a quarter window, as
/// the SSH path batches its window adjustments.
pub fn grant_batch(window: usize) -> usize {
    (window / 4).max(1)
}

/// Compatibility mode's budget for one connection: the total time its
/// reader kept the shared stream waiting within the last `window`. A
/// reader that takes one chunk just before each timeout still runs out.
#[derive(Debug)]
pub struct StallBudget {
    limit: Duration,
    window: Duration,
    /// Past waits (start, length) inside the window.
    spent: VecDeque<(Instant, Duration)>,
}

impl StallBudget {
    /// A budget of `limit` waiting per `window`.
    pub fn new(limit: Duration, window: Duration) -> StallBudget {
        StallBudget {
            limit,
            window: window.max(limit),
            spent: VecDeque::new(),
        }
    }

    /// Waiting time spent within the window, as of `now`.
    pub fn used(&mut self, now: Instant) -> Duration {
        while let Some((start, _)) = self.spent.front() {
            if now.saturating_duration_since(*start) > self.window {
                self.spent.pop_front();
            } else {
                break;
            }
        }
        self.spent.iter().map(|(_, d)| *d).sum()
    }

    /// How much longer a wait starting at `now` may last.
    pub fn left(&mut self, now: Instant) -> Duration {
        self.limit.saturating_sub(self.used(now))
    }

    /// Records a wait of `len` that started at `start`.
    pub fn charge(&mut self, start: Instant, len: Duration) {
        if !len.is_zero() {
            self.spent.push_back((start, len));
        }
    }
}

/// Flow control and limits of agent streams (docs/konnectivity.md).
#[derive(Debug, Clone)]
pub struct Flow {
    /// Extensions offered to agents (`[konnectivity] extensions`).
    pub extensions: Extensions,
    /// Receive window per connection with `credit`
    /// (`[konnectivity] credit_window`).
    pub credit_window: usize,
    /// Compatibility mode: the window within which one reader may keep an
    /// agent's stream waiting `stall_timeout` in total
    /// (`[konnectivity] stall_window`).
    pub stall_window: Duration,
    /// Most connections open through one agent
    /// (`[konnectivity] max_connections_per_agent`).
    pub max_connections_per_agent: usize,
    /// Most control packets (CLOSE_REQ, CLOSE_RSP, CREDIT, DIAL_CLS)
    /// queued towards one agent before it is disconnected
    /// (`[konnectivity] max_queued_control`).
    pub max_queued_control: usize,
    /// Compatibility mode: how long a target may stay silent after the
    /// client's EOF before the connection is closed
    /// (`[konnectivity] half_close_idle`).
    pub half_close_idle: Duration,
}

impl Default for Flow {
    fn default() -> Flow {
        Flow {
            extensions: Extensions::ALL,
            credit_window: DEFAULT_CREDIT_WINDOW,
            stall_window: Flow::DEFAULT_STALL_WINDOW,
            max_connections_per_agent: Flow::DEFAULT_MAX_CONNECTIONS_PER_AGENT,
            max_queued_control: Flow::DEFAULT_MAX_QUEUED_CONTROL,
            half_close_idle: Flow::DEFAULT_HALF_CLOSE_IDLE,
        }
    }
}

impl Flow {
    /// The settings of `[konnectivity]`.
    pub fn from_config(k: &sshbridge_config::Konnectivity) -> Flow {
        Flow {
            extensions: Extensions::parse(k.extensions.iter().map(String::as_str)),
            credit_window: k.credit_window,
            stall_window: k.stall_window,
            max_connections_per_agent: k.max_connections_per_agent as usize,
            max_queued_control: k.max_queued_control as usize,
            half_close_idle: k.half_close_idle,
        }
    }

    /// Default stall window: 5 minutes (ten default stall timeouts).
    pub const DEFAULT_STALL_WINDOW: Duration = Duration::from_secs(300);
    /// Default cap of connections per agent.
    pub const DEFAULT_MAX_CONNECTIONS_PER_AGENT: usize = 4096;
    /// Default cap of queued control packets per agent.
    pub const DEFAULT_MAX_QUEUED_CONTROL: usize = 8192;
    /// Default silence after a client's EOF in compatibility mode.
    pub const DEFAULT_HALF_CLOSE_IDLE: Duration = Duration::from_secs(5);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_used_only_when_both_announce_them() {
        let ours = Extensions::ALL;
        assert_eq!(ours.header(), "half-close,credit");
        let peer = Extensions::parse(["credit, future-thing"]);
        assert_eq!(
            ours.both(peer),
            Extensions {
                half_close: false,
                credit: true
            }
        );
        assert_eq!(ours.both(Extensions::parse([])), Extensions::NONE);
        assert_eq!(Extensions::NONE.mode(), "compatibility");
    }

    #[test]
    fn windows_below_one_chunk_are_refused() {
        assert_eq!(parse_window(Some("1048576")), Some(1 << 20));
        assert_eq!(parse_window(Some("100")), None);
        assert_eq!(parse_window(Some("x")), None);
        assert_eq!(parse_window(None), None);
    }

    #[tokio::test]
    async fn credit_is_taken_up_to_what_was_granted() {
        let gate = CreditGate::new(10);
        assert_eq!(gate.take(4).await, 4);
        assert_eq!(gate.take(100).await, 6);
        let waiting = tokio::time::timeout(Duration::from_millis(20), gate.take(1)).await;
        assert!(waiting.is_err(), "no credit must wait");
        gate.grant(3);
        assert_eq!(gate.take(100).await, 3);
    }

    #[test]
    fn a_stall_budget_sums_waits_inside_its_window() {
        let t0 = Instant::now();
        let mut b = StallBudget::new(Duration::from_secs(1), Duration::from_secs(10));
        b.charge(t0, Duration::from_millis(900));
        assert_eq!(b.left(t0), Duration::from_millis(100));
        b.charge(t0, Duration::from_millis(200));
        assert_eq!(b.left(t0), Duration::ZERO);
        // Outside the window the waits no longer count.
        assert_eq!(b.left(t0 + Duration::from_secs(11)), Duration::from_secs(1));
    }
}
