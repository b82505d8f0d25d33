//! The `[kubernetes]` section (the kubeconfig, which must exist, and its
//! context) and the `[inventory]` section (static or discovered nodes).

use super::Ctx;
use crate::model::{Ha, Inventory, InventorySource, Kubernetes, NODE_ADDRESS_TYPES};
use crate::raw::{RawHa, RawInventory, RawKubernetes, Str};
use crate::units::Problem;

pub(super) fn kubernetes(cx: &mut Ctx<'_>, raw: &RawKubernetes) -> Kubernetes {
    let kubeconfig = raw
        .kubeconfig
        .as_ref()
        .map(|v| cx.file("kubernetes", "kubernetes.kubeconfig", Some(v), "", false));
    let context = raw.context.as_ref().and_then(|v| {
        if v.get_ref().trim().is_empty() {
            let p = Problem {
                message: "is empty".into(),
                hint: Some("name a context of the kubeconfig, or remove the key to use its current-context".into()),
            };
            cx.report(&v.span(), "kubernetes.context", p);
            return None;
        }
        if kubeconfig.is_none() {
            let p = Problem {
                message: "needs kubernetes.kubeconfig (the in-cluster service account has no contexts)".into(),
                hint: Some("set kubeconfig, or remove context".into()),
            };
            cx.report(&v.span(), "kubernetes.context", p);
        }
        Some(v.get_ref().clone())
    });
    Kubernetes {
        kubeconfig,
        context,
    }
}

/// Default `[inventory] address_types`.
const DEFAULT_ADDRESS_TYPES: [&str; 2] = ["InternalIP", "ExternalIP"];
/// Default `[inventory] ssh_port`.
const DEFAULT_SSH_PORT: u16 = 22;
/// Default `[inventory] ssh_address_annotation`.
const DEFAULT_SSH_ADDRESS_ANNOTATION: &str = "sshbridge.io/ssh-address";
/// Default `[inventory] watch_grace`.
const DEFAULT_WATCH_GRACE: &str = "30s";

pub(super) fn inventory(cx: &mut Ctx<'_>, raw: &RawInventory, have_kubernetes: bool) -> Inventory {
    let source = match &raw.source {
        None => InventorySource::Static,
        Some(v) => match v.get_ref().as_str() {
            "static" => InventorySource::Static,
            "kubernetes" => InventorySource::Kubernetes,
            other => {
                let p = Problem {
                    message: format!("unknown source {other:?}"),
                    hint: Some("write \"static\" (the default) or \"kubernetes\"".into()),
                };
                cx.report(&v.span(), "inventory.source", p);
                InventorySource::Static
            }
        },
    };
    if source == InventorySource::Kubernetes && !have_kubernetes {
        let span = cx.at("inventory", raw.source.as_ref());
        let p = Problem {
            message: "\"kubernetes\" needs a [kubernetes] section".into(),
            hint: Some("add [kubernetes] with kubeconfig = \"PATH\", or an empty [kubernetes] for the in-cluster service account".into()),
        };
        cx.report(&span, "inventory.source", p);
    }
    let node_selector = raw.node_selector.as_ref().and_then(|v| {
        let s = v.get_ref().trim();
        if s.is_empty() {
            let p = Problem {
                message: "is empty".into(),
                hint: Some("write a label selector, e.g. \"node-role.kubernetes.io/worker\", or remove the key to watch every node".into()),
            };
            cx.report(&v.span(), "inventory.node_selector", p);
            return None;
        }
        Some(s.to_owned())
    });
    let address_types = match &raw.address_types {
        None => DEFAULT_ADDRESS_TYPES.map(str::to_owned).to_vec(),
        Some(list) => address_types(cx, raw, list),
    };
    let ssh_port = cx.port(
        "inventory.ssh_port",
        raw.ssh_port.as_ref(),
        DEFAULT_SSH_PORT,
    );
    let ssh_address_annotation = annotation(
        cx,
        "inventory.ssh_address_annotation",
        raw.ssh_address_annotation.as_ref(),
    )
    .unwrap_or_else(|| DEFAULT_SSH_ADDRESS_ANNOTATION.to_owned());
    let watch_grace = cx.duration(
        "inventory.watch_grace",
        raw.watch_grace.as_ref(),
        DEFAULT_WATCH_GRACE,
        true,
    );
    Inventory {
        source,
        node_selector,
        address_types,
        ssh_port,
        ssh_address_annotation,
        watch_grace,
    }
}

fn address_types(cx: &mut Ctx<'_>, raw: &RawInventory, list: &[Str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in list {
        let t = v.get_ref();
        if !NODE_ADDRESS_TYPES.contains(&t.as_str()) {
            let p = Problem {
                message: format!("unknown node address type {t:?}"),
                hint: Some(format!("use {}", NODE_ADDRESS_TYPES.join(", "))),
            };
            cx.report(&v.span(), "inventory.address_types", p);
        } else if out.contains(t) {
            let p = Problem {
                message: format!("{t:?} is listed twice"),
                hint: None,
            };
            cx.report(&v.span(), "inventory.address_types", p);
        } else {
            out.push(t.clone());
        }
    }
    if list.is_empty() {
        let span = cx.at("inventory", raw.source.as_ref());
        let p = Problem {
            message: "is empty, so no node would get an address".into(),
            hint: Some("the default is [\"InternalIP\", \"ExternalIP\"]".into()),
        };
        cx.report(&span, "inventory.address_types", p);
    }
    out
}

/// An annotation key: `[prefix/]name`, no blanks.
fn annotation(cx: &mut Ctx<'_>, key: &str, v: Option<&Str>) -> Option<String> {
    let v = v?;
    let s = v.get_ref();
    let name = s.rsplit('/').next().unwrap_or_default();
    let prefix_ok = s
        .rsplit_once('/')
        .is_none_or(|(prefix, _)| crate::units::is_dns1123_subdomain(prefix));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if prefix_ok && name_ok {
        return Some(s.clone());
    }
    let p = Problem {
        message: format!("{s:?} is not an annotation key"),
        hint: Some("write PREFIX/NAME, e.g. \"sshbridge.io/ssh-address\"".into()),
    };
    cx.report(&v.span(), key, p);
    None
}

/// Default `[ha] status_interval`: a change is seen by the other bridges
/// within 5 s (well inside a shadow of 5 probes at 2 s), 12 writes a minute
/// per bridge, and a stopped bridge is gone after 15 s.
const DEFAULT_STATUS_INTERVAL: &str = "5s";
/// Bounds of `[ha] status_interval`: below 1 s the writes load the
/// apiserver for nothing; above 5 min a dead bridge counts for 15 min.
const STATUS_INTERVAL_RANGE: (u64, u64) = (1, 300);

pub(super) fn ha(cx: &mut Ctx<'_>, raw: &RawHa, have_kubernetes: bool) -> Ha {
    let status_namespace = raw.status.as_ref().and_then(|v| {
        let Some(ns) = v.get_ref().strip_prefix("kubernetes:") else {
            let p = Problem {
                message: format!("{:?} is not a status location", v.get_ref()),
                hint: Some("write \"kubernetes:NAMESPACE\", or remove the key (no status objects)".into()),
            };
            cx.report(&v.span(), "ha.status", p);
            return None;
        };
        let label = !ns.is_empty()
            && ns.len() <= 63
            && !ns.contains('.')
            && crate::units::is_dns1123_subdomain(ns);
        if !label {
            let p = Problem {
                message: format!("{ns:?} is not a namespace name"),
                hint: Some("a DNS-1123 label: lower-case letters, digits and '-', e.g. \"kube-system\"".into()),
            };
            cx.report(&v.span(), "ha.status", p);
            return None;
        }
        if !have_kubernetes {
            let p = Problem {
                message: "needs a [kubernetes] section".into(),
                hint: Some("add [kubernetes] with kubeconfig = \"PATH\", or an empty [kubernetes] for the in-cluster service account".into()),
            };
            cx.report(&v.span(), "ha.status", p);
        }
        Some(ns.to_owned())
    });
    let status_interval = cx.duration(
        "ha.status_interval",
        raw.status_interval.as_ref(),
        DEFAULT_STATUS_INTERVAL,
        false,
    );
    let (lo, hi) = STATUS_INTERVAL_RANGE;
    if let Some(v) = &raw.status_interval {
        if status_interval.as_secs() < lo || status_interval.as_secs() > hi {
            let p = Problem {
                message: format!("must be between {lo}s and {hi}s"),
                hint: Some(format!("the default is \"{DEFAULT_STATUS_INTERVAL}\"")),
            };
            cx.report(&v.span(), "ha.status_interval", p);
        }
    }
    Ha {
        status_namespace,
        status_interval,
    }
}
