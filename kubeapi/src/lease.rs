//! Leader election with a `coordination.k8s.io/v1` Lease, as
//! kube-controller-manager does it: one bridge of a highly available
//! control plane drives the migration, the others follow.
//!
//! An elector tries every `retry_period` to acquire the Lease (when it is
//! free, released, or expired) or to renew it (when it holds it). Expiry is
//! judged on this machine's clock, from when this elector last saw the
//! Lease change (as client-go does), so clock skew between machines does
//! not matter. A leader whose renewals have not succeeded for
//! `renew_deadline` stops leading at once; since `renew_deadline <
//! lease_duration`, it has stopped before any other bridge can see the
//! Lease expire. A clean [`Leadership::release`] empties the holder, so
//! another bridge takes over within one `retry_period`.
//!
//! Every write carries the `resourceVersion` read, so two electors racing
//! for a free Lease cannot both win (409 Conflict).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::chrono::Utc;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;

/// The timing and the Lease of an elector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionSettings {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This elector's identity (the bridge's `[bridge] id`).
    pub identity: String,
    /// How long a Lease not renewed stays held (15s).
    pub lease_duration: Duration,
    /// How long a leader keeps leading without a successful renewal (10s).
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew (2s).
    pub retry_period: Duration,
}

impl ElectionSettings {
    /// The settings of `[migration.leader_election]`, held as `identity`
    /// (the bridge's `[bridge] id`).
    pub fn from_config(c: &sshbridge_config::LeaderElection, identity: &str) -> Self {
        ElectionSettings {
            namespace: c.lease_namespace.clone(),
            name: c.lease_name.clone(),
            identity: identity.to_owned(),
            lease_duration: c.lease_duration,
            renew_deadline: c.renew_deadline,
            retry_period: c.retry_period,
        }
    }
}

/// What an elector knows now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaderState {
    /// Whether this elector leads.
    pub leading: bool,
    /// The holder the Lease named when last read (this elector's
    /// identity when it leads), for telling an operator whom to ask.
    pub holder: Option<String>,
}

/// A running elector. Dropping it stops trying without releasing the
/// Lease (as a crash would): another elector takes over once the Lease
/// expires. [`Leadership::release`] hands over at once.
pub struct Leadership {
    state: watch::Receiver<LeaderState>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Leadership {
    /// Starts an elector on `client`'s apiserver.
    pub fn start(client: kube::Client, settings: ElectionSettings) -> Leadership {
        let (tx, state) = watch::channel(LeaderState::default());
        let stop = CancellationToken::new();
        let elector = Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
            tx,
        };
        let task = tokio::spawn(elector.run(stop.clone()));
        Leadership {
            state,
            stop,
            task: Some(task),
        }
    }

    /// Whether this elector leads now.
    pub fn is_leader(&self) -> bool {
        self.state.borrow().leading
    }

    /// The current state.
    pub fn state(&self) -> LeaderState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of the state.
    pub fn watch(&self) -> watch::Receiver<LeaderState> {
        self.state.clone()
    }

    /// Stops the elector and, if it leads, empties the Lease's holder so
    /// that another elector takes over within its `retry_period`.
    pub async fn release(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The Lease as last seen: what changed, and when this elector saw it.
struct Observed {
    holder: Option<String>,
    renew: Option<MicroTime>,
    duration: Duration,
    at: Instant,
}

struct Elector {
    api: Api<Lease>,
    settings: ElectionSettings,
    observed: Option<Observed>,
    tx: watch::Sender<LeaderState>,
}

impl Elector {
    async fn run(mut self, stop: CancellationToken) {
        let s = self.settings.clone();
        // While leading: the instant leadership ends unless renewed.
        let mut until: Option<Instant> = None;
        'run: loop {
            let sent = Instant::now();
            let attempt = timeout(s.retry_period.max(Duration::from_secs(1)), self.try_once());
            let deadline = until.unwrap_or(sent);
            let result = tokio::select! {
                _ = stop.cancelled() => break 'run,
                _ = sleep_until(deadline), if until.is_some() => None,
                r = attempt => Some(r),
            };
            match result {
                Some(Ok(Ok(true))) => until = Some(sent + s.renew_deadline),
                Some(Ok(Ok(false))) => {}
                Some(Ok(Err(e))) => {
                    tracing::debug!(lease = %s.name, error = %e, "leader election: attempt failed")
                }
                Some(Err(_)) => {
                    tracing::debug!(lease = %s.name, "leader election: attempt timed out")
                }
                None => {}
            }
            until = self.check(until);
            self.publish(until.is_some());
            let next = Instant::now() + s.retry_period;
            loop {
                let deadline = until.unwrap_or(next);
                tokio::select! {
                    _ = stop.cancelled() => break 'run,
                    _ = sleep_until(deadline), if until.is_some_and(|u| u < next) => {
                        until = self.check(until);
                        self.publish(until.is_some());
                    }
                    _ = sleep_until(next) => break,
                }
            }
        }
        if until.is_some() {
            self.publish(false);
            match timeout(s.retry_period, self.release()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(lease = %s.name, error = %e, "leader election: release failed; the lease expires instead")
                }
                Err(_) => {
                    tracing::warn!(lease = %s.name, "leader election: release timed out; the lease expires instead")
                }
            }
        }
    }

    /// Ends leadership whose renewal deadline has passed.
    fn check(&self, until: Option<Instant>) -> Option<Instant> {
        match until {
            Some(u) if Instant::now() >= u => {
                tracing::warn!(
                    lease = %self.settings.name,
                    "leader election: no renewal for {:?}; stepping down",
                    self.settings.renew_deadline
                );
                None
            }
            other => other,
        }
    }

    fn publish(&self, leading: bool) {
        let holder = if leading {
            Some(self.settings.identity.clone())
        } else {
            self.observed.as_ref().and_then(|o| o.holder.clone())
        };
        self.tx.send_if_modified(|st| {
            let new = LeaderState { leading, holder };
            let changed = *st != new;
            *st = new;
            changed
        });
    }

    /// One acquire-or-renew; `Ok(true)` when this elector holds the Lease.
    async fn try_once(&mut self) -> Result<bool, kube::Error> {
        let s = self.settings.clone();
        let now = MicroTime(Utc::now());
        let duration_s = i32::try_from(s.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(lease) = self.api.get_opt(&s.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    namespace: Some(s.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(s.identity.clone()),
                    lease_duration_seconds: Some(duration_s),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                }),
            };
            return write(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(s.identity.as_str());
        self.observe(&spec, holder.clone());
        if !mine && holder.is_some() && !self.expired() {
            return Ok(false);
        }
        let mut new = lease.clone();
        let transitions = spec.lease_transitions.unwrap_or(0);
        new.spec = Some(LeaseSpec {
            holder_identity: Some(s.identity.clone()),
            lease_duration_seconds: Some(duration_s),
            acquire_time: if mine {
                spec.acquire_time
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if mine { transitions } else { transitions + 1 }),
        });
        let won = write(
            self.api
                .replace(&s.name, &PostParams::default(), &new)
                .await,
        )?;
        if won && !mine {
            tracing::info!(lease = %s.name, identity = %s.identity, previous = ?holder, "leader election: acquired the lease");
        }
        Ok(won)
    }

    /// Notes the Lease's holder and renew time; a change restarts the
    /// expiry clock.
    fn observe(&mut self, spec: &LeaseSpec, holder: Option<String>) {
        let duration = Duration::from_secs(
            spec.lease_duration_seconds
                .and_then(|d| u64::try_from(d).ok())
                .unwrap_or(self.settings.lease_duration.as_secs()),
        );
        let same = self
            .observed
            .as_ref()
            .is_some_and(|o| o.holder == holder && o.renew == spec.renew_time);
        if !same {
            self.observed = Some(Observed {
                holder,
                renew: spec.renew_time.clone(),
                duration,
                at: Instant::now(),
            });
        }
    }

    fn expired(&self) -> bool {
        self.observed
            .as_ref()
            .is_none_or(|o| o.at + o.duration <= Instant::now())
    }

    /// Empties the holder if this elector still holds the Lease.
    async fn release(&mut self) -> Result<(), kube::Error> {
        let s = self.settings.clone();
        let Some(mut lease) = self.api.get_opt(&s.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Utc::now()));
        self.api
            .replace(&s.name, &PostParams::default(), &lease)
            .await?;
        tracing::info!(lease = %s.name, identity = %s.identity, "leader election: released the lease");
        Ok(())
    }
}

/// A write's outcome: won, lost to another writer (409), or an error.
fn write(r: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
