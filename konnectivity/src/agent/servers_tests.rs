use std::time::Duration;

use super::*;

fn within(d: Duration, base: Duration) -> bool {
    let (lo, hi) = (base.mul_f64(0.89), base.mul_f64(1.11));
    (lo..=hi).contains(&d)
}

#[test]
fn dials_until_every_distinct_server_is_held_and_refuses_a_duplicate() {
    let mut set = ServerSet::default();
    assert_eq!(set.wanted(), None);
    assert!(set.should_dial(false), "the count is unknown before a dial");
    set.add("bridge-a", Some(3)).unwrap();
    assert_eq!((set.held(), set.wanted()), (1, Some(3)));
    assert!(set.should_dial(false));
    assert_eq!(
        set.add("bridge-a", Some(3)),
        Err(Duplicate("bridge-a".into()))
    );
    assert_eq!(set.held(), 1, "a duplicate is not held twice");
    set.add("bridge-b", Some(3)).unwrap();
    set.add("bridge-c", Some(3)).unwrap();
    assert!(set.complete());
    assert!(!set.should_dial(false), "all three held: no more dials");
    assert!(set.should_dial(true), "--sync-forever keeps looking");
    assert_eq!(set.ids(), ["bridge-a", "bridge-b", "bridge-c"]);
}

#[test]
fn a_lost_server_is_dialed_again() {
    let mut set = ServerSet::default();
    for id in ["a", "b", "c"] {
        set.add(id, Some(3)).unwrap();
    }
    assert!(set.remove("b"));
    assert!(!set.remove("b"), "removed once");
    assert!(set.should_dial(false));
    assert_eq!(set.add("a", Some(3)), Err(Duplicate("a".into())));
    set.add("b", Some(3)).unwrap();
    assert!(set.complete());
}

#[test]
fn the_count_follows_the_last_server_added_not_a_duplicate() {
    let mut set = ServerSet::default();
    set.add("a", Some(2)).unwrap();
    set.add("b", Some(2)).unwrap();
    assert!(set.complete());
    // A duplicate announcing a larger count is ignored (stale data).
    assert!(set.add("a", Some(5)).is_err());
    assert_eq!(set.wanted(), Some(2));
    // A new server announcing 3: one more to find.
    set.remove("b");
    set.add("b", Some(3)).unwrap();
    assert_eq!(set.wanted(), Some(3));
    assert!(!set.complete());
    set.add("c", Some(3)).unwrap();
    assert!(set.complete());
    // Scaled down to 2: more held than wanted is still complete (the
    // removed server's stream ends by itself).
    set.remove("c");
    set.add("c", Some(2)).unwrap();
    assert_eq!((set.held(), set.wanted()), (3, Some(2)));
    assert!(set.complete());
    // A server without a usable count leaves the count as it was.
    set.remove("c");
    set.add("c", None).unwrap();
    assert_eq!(set.wanted(), Some(2));
}

#[test]
fn delays_follow_upstreams_sync_loop() {
    let (interval, cap) = (Duration::from_secs(1), Duration::from_secs(10));
    let mut d = SyncDelay::new(&sshbridge_config::Backoff {
        initial: interval,
        max: cap,
        multiplier: SYNC_FACTOR,
        jitter: SYNC_JITTER,
    });
    // Failures back off by 1.5 up to the cap.
    let bases = [1.0, 1.5, 2.25, 3.375, 5.0625, 7.59375, 10.0, 10.0];
    for base in bases {
        let got = d.after(Outcome::Failed, false);
        assert!(
            within(got, Duration::from_secs_f64(base)) && got <= cap,
            "{got:?} vs {base}"
        );
    }
    // A duplicate while servers are missing: the interval again, fresh.
    assert!(within(d.after(Outcome::Duplicate, false), interval));
    assert!(within(d.after(Outcome::Failed, false), interval));
    // Duplicates with nothing missing (--sync-forever) back off.
    d.after(Outcome::Added, true);
    let first = d.after(Outcome::Duplicate, true);
    let second = d.after(Outcome::Duplicate, true);
    assert!(within(first, interval), "{first:?}");
    assert!(within(second, interval.mul_f64(1.5)), "{second:?}");
    // Added or complete: the interval, and the backoff starts over.
    assert!(within(d.after(Outcome::Complete, true), interval));
    assert!(within(d.after(Outcome::Failed, false), interval));
}
