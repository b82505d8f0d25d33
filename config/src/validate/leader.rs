//! `[migration.leader_election]`: the Lease of a shared (`kubernetes:`)
//! store, its timing (kube-controller-manager's defaults) and their order.

use super::Ctx;
use crate::model::LeaderElection;
use crate::raw::RawMigration;
use crate::units::Problem;

pub(super) fn leader_election(
    cx: &mut Ctx<'_>,
    raw: &RawMigration,
    store: &str,
) -> Option<LeaderElection> {
    let table = raw.leader_election.as_ref();
    let Some((ns, name)) = store
        .strip_prefix("kubernetes:")
        .and_then(|r| r.split_once('/'))
    else {
        if let Some(t) = table {
            let span = cx.at("migration.leader_election", t.lease_duration.as_ref());
            let p = Problem {
                message: "leader election needs a shared store".into(),
                hint: Some(
                    "set migration.store = \"kubernetes:NAMESPACE/NAME\" (several bridges), or \
                     remove [migration.leader_election] (one bridge with a file: store)"
                        .into(),
                ),
            };
            cx.report(&span, "migration.leader_election", p);
        }
        return None;
    };
    let d = |cx: &mut Ctx<'_>, key: &str, v, default| {
        cx.duration(
            &format!("migration.leader_election.{key}"),
            v,
            default,
            false,
        )
    };
    let lease_duration = d(
        cx,
        "lease_duration",
        table.and_then(|t| t.lease_duration.as_ref()),
        "15s",
    );
    let renew_deadline = d(
        cx,
        "renew_deadline",
        table.and_then(|t| t.renew_deadline.as_ref()),
        "10s",
    );
    let retry_period = d(
        cx,
        "retry_period",
        table.and_then(|t| t.retry_period.as_ref()),
        "2s",
    );
    if let Some(t) = table {
        if let Some(v) = &t.lease_duration {
            if lease_duration.subsec_nanos() != 0 {
                let p = Problem {
                    message: format!("{:?} is not a whole number of seconds", v.get_ref()),
                    hint: Some("a Lease counts whole seconds, e.g. \"15s\"".into()),
                };
                cx.report(&v.span(), "migration.leader_election.lease_duration", p);
            }
        }
        if !(retry_period < renew_deadline && renew_deadline < lease_duration) {
            let span = cx.at(
                "migration.leader_election",
                t.renew_deadline
                    .as_ref()
                    .or(t.lease_duration.as_ref())
                    .or(t.retry_period.as_ref()),
            );
            let p = Problem {
                message: format!(
                    "retry_period {retry_period:?} < renew_deadline {renew_deadline:?} < \
                     lease_duration {lease_duration:?} does not hold"
                ),
                hint: Some(
                    "a leader must step down (renew_deadline) before its Lease can expire for \
                     another bridge (lease_duration), and retry more than once in between; \
                     the defaults are 2s, 10s, 15s"
                        .into(),
                ),
            };
            cx.report(&span, "migration.leader_election", p);
        }
    }
    let default_lease = format!("{ns}/{name}-leader");
    let lease = Ctx::string(table.and_then(|t| t.lease.as_ref()), &default_lease);
    let (lease_namespace, lease_name) = match lease.split_once('/') {
        Some((n, l)) if !n.is_empty() && !l.is_empty() && !l.contains('/') => {
            (n.to_owned(), l.to_owned())
        }
        _ => {
            if let Some(v) = table.and_then(|t| t.lease.as_ref()) {
                let p = Problem {
                    message: format!("{:?} is not NAMESPACE/NAME", v.get_ref()),
                    hint: Some(format!("e.g. \"{default_lease}\" (the default)")),
                };
                cx.report(&v.span(), "migration.leader_election.lease", p);
            }
            (ns.to_owned(), format!("{name}-leader"))
        }
    };
    Some(LeaderElection {
        lease_namespace,
        lease_name,
        lease_duration,
        renew_deadline,
        retry_period,
    })
}
