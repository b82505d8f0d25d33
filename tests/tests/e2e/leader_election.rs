//! Leader election with a `coordination.k8s.io/v1` Lease against a real
//! kube-apiserver v1.20.2: one leader of two; a crashed leader (no
//! release) replaced within lease_duration + retry_period and not before
//! its Lease expires; a clean release handed over within a retry period;
//! a leader cut off from its apiserver steps down within renew_deadline,
//! before its Lease could expire for anyone else. Timings are scaled down
//! (4s / 3s / 500ms) to keep the test short; the order is the same as
//! kube-controller-manager's 15s / 10s / 2s.

use std::time::{Duration, Instant};

use sshbridge_config::Kubernetes;
use sshbridge_kubeapi::lease::{ElectionSettings, Leadership};
use sshbridge_sim::pki::Pki;
use sshbridge_tests::inventory::api_only;

use crate::support::within;

const LEASE: Duration = Duration::from_secs(4);
const RENEW: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_millis(500);
/// Scheduling slack on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(1500);

fn settings(identity: &str) -> ElectionSettings {
    ElectionSettings {
        namespace: "kube-system".into(),
        name: "sshbridge-migration-leader".into(),
        identity: identity.into(),
        lease_duration: LEASE,
        renew_deadline: RENEW,
        retry_period: RETRY,
    }
}

/// Waits (bounded) until `pred` holds; returns how long it took.
async fn until(what: &str, bound: Duration, pred: impl Fn() -> bool) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    while !pred() {
        anyhow::ensure!(t0.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(t0.elapsed())
}

#[tokio::test]
async fn one_leader_takes_over_after_a_crash_a_release_and_steps_down_when_cut_off(
) -> anyhow::Result<()> {
    within(180, async {
        let dir = tempfile::tempdir()?;
        let pki = Pki::new("lease-e2e-ca")?;
        let ca = pki.write_ca(dir.path())?;
        let mut cp = api_only(&pki, &ca, &dir.path().join("cp")).await?;
        let k = Kubernetes {
            kubeconfig: Some(cp.kubeconfig().to_path_buf()),
            context: None,
        };
        let client = || sshbridge_kubeapi::client(&k);

        // Two electors: exactly one leads, and they agree on who.
        let a = Leadership::start(client().await?, settings("bridge-a"));
        let b = Leadership::start(client().await?, settings("bridge-b"));
        until("a leader", LEASE + SLACK, || a.is_leader() || b.is_leader()).await?;
        let t0 = Instant::now();
        while t0.elapsed() < 2 * RETRY + RETRY {
            anyhow::ensure!(!(a.is_leader() && b.is_leader()), "two leaders");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (leader, follower) = if a.is_leader() { (a, b) } else { (b, a) };
        let leader_id = leader.state().holder.expect("the leader names itself");
        until("the follower sees the leader", RETRY + SLACK, || {
            follower.state().holder.as_deref() == Some(leader_id.as_str())
        })
        .await?;
        anyhow::ensure!(leader.is_leader() && !follower.is_leader(), "leadership moved");

        // The leader crashes (dropped, no release): the follower takes
        // over once the Lease expires, not before.
        drop(leader);
        let crash = Instant::now();
        let took = until("takeover after a crash", LEASE + RETRY + SLACK, || {
            follower.is_leader()
        })
        .await?;
        anyhow::ensure!(
            took + RETRY >= LEASE,
            "took over {took:?} after the crash: before the lease ({LEASE:?}) expired"
        );
        println!("takeover after a crash: {:?} (lease {LEASE:?}, retry {RETRY:?})", crash.elapsed());

        // A new elector waits; a clean release hands over at once.
        let c = Leadership::start(client().await?, settings("bridge-c"));
        tokio::time::sleep(2 * RETRY).await;
        anyhow::ensure!(!c.is_leader() && follower.is_leader(), "a held lease was taken");
        let released = Instant::now();
        follower.release().await;
        let took = until("takeover after a release", 2 * RETRY + SLACK, || c.is_leader()).await?;
        println!("takeover after a release: {took:?} (released in {:?})", released.elapsed() - took);

        // Cut off from the apiserver, the leader steps down within
        // renew_deadline of its last renewal: before the Lease (held for
        // lease_duration from that renewal) could expire for anyone else.
        cp.stop_apiserver().await?;
        let stopped = Instant::now();
        let took = until("stepping down when cut off", RENEW + SLACK, || !c.is_leader()).await?;
        anyhow::ensure!(
            took + RETRY >= RENEW && took < LEASE,
            "stepped down {took:?} after the apiserver stopped (renew_deadline {RENEW:?}, lease {LEASE:?})"
        );
        println!("stepped down {:?} after the apiserver stopped", stopped.elapsed());
        drop(c);
        Ok(())
    })
    .await
}
