//! The bridge's own access to the Kubernetes API: a ServiceAccount (for a
//! bridge running in a pod) or a named user (a kubeconfig's), and the
//! least RBAC the config in use needs, nothing more:
//!
//! - `[inventory] source = "kubernetes"`: `list` and `watch` on `nodes`
//!   (the Node watch, and its one-item list while the watch fails);
//! - `[konnectivity] agent_auth = "tokenreview"`: `create` on
//!   `tokenreviews` (cluster scope), and `get` on `pods` only in the
//!   namespaces of the allowed service accounts (a token is bound to a
//!   node through its pod's `spec.nodeName`), as a Role per namespace;
//! - `[migration] store = "kubernetes:NS/NAME"`: in the record's
//!   namespace `get`, `list`, `watch` and `update` on that ConfigMap only
//!   (a follower watches it with `fieldSelector=metadata.name=NAME`), and
//!   in the Lease's namespace `get`/`update` on that Lease only
//!   (`[migration.leader_election]`),
//!   plus `create` on each kind (RBAC cannot name an object that does not
//!   exist yet);
//! - `[ha] status = "kubernetes:NS"`: in that namespace `list` on
//!   `configmaps` (the other bridges' status objects), and `get`, `create`
//!   and `update` on them, not by name: each bridge's object is named after
//!   its `[bridge] id`, which defaults to the host name (a pod's name in a
//!   Deployment) and so is not known here. Give the status objects a
//!   namespace of their own: these rules cover every ConfigMap in it.
//!
//! A config that makes no API call gets an error, not an empty role.

use std::collections::BTreeMap;

use sshbridge_config::{AgentAuth, Config, InventorySource};
use sshbridge_migrate::StoreSpec;

use super::{for_version, header, quote, KubeVersion, ManifestError};

/// Flags of `manifests rbac`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacOptions {
    /// `--name`: the ServiceAccount, ClusterRole and binding names.
    pub name: String,
    /// `--namespace`: the ServiceAccount's.
    pub namespace: String,
    /// `--user NAME`: bind this user (the kubeconfig's client certificate
    /// CN) instead of creating a ServiceAccount.
    pub user: Option<String>,
    /// `--kubernetes-version`: the cluster's release.
    pub kubernetes: KubeVersion,
}

impl Default for RbacOptions {
    fn default() -> Self {
        RbacOptions {
            name: "sshbridge".into(),
            namespace: "kube-system".into(),
            user: None,
            kubernetes: KubeVersion::NEWEST,
        }
    }
}

/// One rule: why (a comment), API group, resource, verbs, and the only
/// objects it applies to (all when empty).
#[derive(Clone)]
struct Rule {
    why: &'static str,
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    names: Vec<String>,
}

fn nodes() -> Rule {
    Rule {
        why: "[inventory] source = \"kubernetes\": the Node watch",
        group: "",
        resource: "nodes",
        verbs: &["list", "watch"],
        names: Vec::new(),
    }
}

fn tokenreviews() -> Rule {
    Rule {
        why: "[konnectivity] agent_auth = \"tokenreview\": agents' service account tokens",
        group: "authentication.k8s.io",
        resource: "tokenreviews",
        verbs: &["create"],
        names: Vec::new(),
    }
}

fn pods() -> Rule {
    Rule {
        why:
            "agent_auth = \"tokenreview\": an agent's pod's spec.nodeName binds its token to a node",
        group: "",
        resource: "pods",
        verbs: &["get"],
        names: Vec::new(),
    }
}

/// The rules of a shared migration record and its Lease, by namespace.
fn shared_record(cfg: &Config) -> Vec<(String, Rule)> {
    let Ok(StoreSpec::Kubernetes { namespace, name }) = StoreSpec::parse(&cfg.migration.store)
    else {
        return Vec::new();
    };
    let record = |verbs, names| Rule {
        why: "[migration] store = \"kubernetes:...\": the shared migration record",
        group: "",
        resource: "configmaps",
        verbs,
        names,
    };
    let mut out = vec![
        (
            namespace.clone(),
            record(&["get", "list", "watch", "update"], vec![name]),
        ),
        (namespace, record(&["create"], Vec::new())),
    ];
    if let Some(le) = &cfg.migration.leader_election {
        let lease = |verbs, names| Rule {
            why:
                "[migration.leader_election]: the Lease that picks the bridge driving the migration",
            group: "coordination.k8s.io",
            resource: "leases",
            verbs,
            names,
        };
        out.push((
            le.lease_namespace.clone(),
            lease(&["get", "update"], vec![le.lease_name.clone()]),
        ));
        out.push((le.lease_namespace.clone(), lease(&["create"], Vec::new())));
    }
    out
}

/// The rules of the per-bridge status objects (`[ha] status`), with their
/// namespace.
fn status_objects(cfg: &Config) -> Option<(String, Rule)> {
    let namespace = cfg.ha.status_namespace.clone()?;
    Some((
        namespace,
        Rule {
            why: "[ha] status: this bridge's status object (named after its id) and the others'",
            group: "",
            resource: "configmaps",
            verbs: &["get", "list", "create", "update"],
            names: Vec::new(),
        },
    ))
}

/// The ServiceAccount (unless `--user`), ClusterRole and ClusterRoleBinding
/// of the cluster-wide rules, and a Role and RoleBinding per namespace of
/// the allowed agent service accounts.
pub fn rbac(cfg: &Config, opts: &RbacOptions) -> Result<String, ManifestError> {
    let mut cluster = Vec::new();
    if cfg.inventory.source == InventorySource::Kubernetes {
        cluster.push(nodes());
    }
    let mut namespaced: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    if let Some(AgentAuth::TokenReview(t)) = cfg.konnectivity.as_ref().map(|k| &k.agent_auth) {
        cluster.push(tokenreviews());
        for sa in &t.service_accounts {
            let rules = namespaced.entry(sa.namespace.clone()).or_default();
            if rules.is_empty() {
                rules.push(pods());
            }
        }
    }
    for (ns, rule) in shared_record(cfg).into_iter().chain(status_objects(cfg)) {
        namespaced.entry(ns).or_default().push(rule);
    }
    if cluster.is_empty() && namespaced.is_empty() {
        return Err(ManifestError::NoApiAccess {
            config: cfg.source.clone(),
        });
    }
    let mut out = header(
        "The bridge's access to the Kubernetes API: only what this config needs.",
        &cfg.source,
    );
    out.push_str(&for_version(opts.kubernetes, &[]));
    let name = quote(&opts.name);
    let mut docs = Vec::new();
    let subject = match &opts.user {
        Some(user) => format!(
            "- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: {}\n",
            quote(user)
        ),
        None => {
            docs.push(format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  \
                 namespace: {}\n",
                quote(&opts.namespace)
            ));
            format!(
                "- kind: ServiceAccount\n  name: {name}\n  namespace: {}\n",
                quote(&opts.namespace)
            )
        }
    };
    if !cluster.is_empty() {
        docs.push(format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  \
             name: {name}\nrules:\n{}",
            rules(&cluster)
        ));
        docs.push(binding(
            "ClusterRoleBinding",
            "ClusterRole",
            &name,
            None,
            &subject,
        ));
    }
    for (ns, ns_rules) in &namespaced {
        let ns = quote(ns);
        docs.push(format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  \
             name: {name}\n  namespace: {ns}\nrules:\n{}",
            rules(ns_rules)
        ));
        docs.push(binding("RoleBinding", "Role", &name, Some(&ns), &subject));
    }
    out.push_str(&docs.join("---\n"));
    Ok(out)
}

fn rules(rules: &[Rule]) -> String {
    rules
        .iter()
        .map(|r| {
            let verbs: Vec<String> = r.verbs.iter().map(|v| quote(v)).collect();
            let names = if r.names.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = r.names.iter().map(|n| quote(n)).collect();
                format!("  resourceNames: [{}]\n", names.join(", "))
            };
            format!(
                "# {}\n- apiGroups: [{}]\n  resources: [{}]\n{names}  verbs: [{}]\n",
                r.why,
                quote(r.group),
                quote(r.resource),
                verbs.join(", ")
            )
        })
        .collect()
}

fn binding(kind: &str, role: &str, name: &str, ns: Option<&str>, subject: &str) -> String {
    let ns = ns
        .map(|n| format!("\n  namespace: {n}"))
        .unwrap_or_default();
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: {name}{ns}\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: {role}\n  name: {name}\n\
         subjects:\n{subject}"
    )
}
