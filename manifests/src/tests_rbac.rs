use super::tests::config;
use super::*;

const KONN_TOKENS: &str = "[konnectivity]\nagent_listen = \"10.0.0.1:8132\"\ncert = \"k.crt\"\n\
key = \"k.key\"\nagent_auth = \"tokenreview\"\n[konnectivity.tokenreview]\n\
service_accounts = [\"kube-system/konnectivity-agent\", \"agents/canary\", \"agents/other\"]\n";
const INVENTORY: &str = "[inventory]\nsource = \"kubernetes\"\n";

fn render(sections: &str, opts: &RbacOptions) -> Result<String, ManifestError> {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(
        d.path(),
        "",
        "unix:/run/sshbridge/admin.sock",
        &format!("[kubernetes]\n{sections}"),
    );
    rbac(&cfg, opts)
}

/// The `rules:` lines of the document of `kind`.
fn rules_of(yaml: &str, kind: &str) -> Vec<String> {
    let doc = yaml
        .split("---\n")
        .find(|d| d.contains(&format!("\nkind: {kind}\n")))
        .unwrap_or_else(|| panic!("no {kind} in:\n{yaml}"));
    doc.lines()
        .filter(|l| {
            l.starts_with("- apiGroups") || l.starts_with("  resources") || l.starts_with("  verbs")
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn inventory_alone_gets_list_and_watch_on_nodes_and_nothing_else() {
    let y = render(INVENTORY, &RbacOptions::default()).unwrap();
    assert_eq!(
        rules_of(&y, "ClusterRole"),
        [
            "- apiGroups: [\"\"]",
            "  resources: [\"nodes\"]",
            "  verbs: [\"list\", \"watch\"]"
        ],
        "{y}"
    );
    assert!(
        !y.contains("tokenreviews") && !y.contains("pods") && !y.contains("kind: Role\n"),
        "{y}"
    );
    assert!(
        y.contains("kind: ServiceAccount\nmetadata:\n  name: \"sshbridge\"\n  namespace: \"kube-system\"\n"),
        "{y}"
    );
    assert!(y.contains("subjects:\n- kind: ServiceAccount\n  name: \"sshbridge\"\n  namespace: \"kube-system\"\n"), "{y}");
}

#[test]
fn tokenreview_gets_tokenreviews_and_pods_only_in_the_agents_namespaces() {
    let y = render(KONN_TOKENS, &RbacOptions::default()).unwrap();
    assert_eq!(
        rules_of(&y, "ClusterRole"),
        [
            "- apiGroups: [\"authentication.k8s.io\"]",
            "  resources: [\"tokenreviews\"]",
            "  verbs: [\"create\"]"
        ],
        "{y}"
    );
    // One Role and RoleBinding per namespace (agents twice: once).
    for ns in ["agents", "kube-system"] {
        assert_eq!(
            y.matches(&format!(
                "kind: Role\nmetadata:\n  name: \"sshbridge\"\n  namespace: \"{ns}\"\n"
            ))
            .count(),
            1,
            "{y}"
        );
    }
    assert_eq!(y.matches("kind: RoleBinding\n").count(), 2, "{y}");
    assert_eq!(rules_of(&y, "Role")[1], "  resources: [\"pods\"]");
    assert_eq!(rules_of(&y, "Role")[2], "  verbs: [\"get\"]");
    assert!(!y.contains("nodes"), "{y}");

    // Both, bound to a kubeconfig's user: no ServiceAccount then.
    let opts = RbacOptions {
        user: Some("system:sshbridge".into()),
        name: "bridge-a".into(),
        ..RbacOptions::default()
    };
    let y = render(&format!("{INVENTORY}{KONN_TOKENS}"), &opts).unwrap();
    assert_eq!(rules_of(&y, "ClusterRole").len(), 6, "{y}");
    assert!(!y.contains("kind: ServiceAccount\n"), "{y}");
    assert_eq!(
        y.matches("subjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: \"system:sshbridge\"\n")
            .count(),
        3,
        "{y}"
    );
    assert!(y.contains("roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: \"bridge-a\"\n"), "{y}");
}

#[test]
fn a_config_without_api_calls_gets_an_error_not_an_empty_role() {
    let err = render("", &RbacOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("makes no Kubernetes API call"),
        "{err}"
    );
}

#[test]
fn a_shared_migration_record_gets_its_configmap_and_lease_by_name_only() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), "", "unix:/run/sshbridge/admin.sock", "");
    cfg.migration.store = "kubernetes:sshbridge/migration".into();
    cfg.migration.leader_election = Some(sshbridge_config::LeaderElection {
        lease_namespace: "kube-system".into(),
        lease_name: "migration-leader".into(),
        lease_duration: std::time::Duration::from_secs(15),
        renew_deadline: std::time::Duration::from_secs(10),
        retry_period: std::time::Duration::from_secs(2),
    });
    let y = rbac(&cfg, &RbacOptions::default()).unwrap();
    // No cluster-wide rule: the record and the Lease are namespaced.
    assert!(!y.contains("kind: ClusterRole\n"), "{y}");
    let role = |ns: &str| {
        y.split("---\n")
            .find(|d| {
                d.contains(&format!(
                    "kind: Role\nmetadata:\n  name: \"sshbridge\"\n  namespace: \"{ns}\"\n"
                ))
            })
            .unwrap_or_else(|| panic!("no Role in {ns}:\n{y}"))
            .to_owned()
    };
    let record = role("sshbridge");
    assert!(
        record.contains("  resources: [\"configmaps\"]\n  resourceNames: [\"migration\"]\n  verbs: [\"get\", \"list\", \"watch\", \"update\"]\n"),
        "{record}"
    );
    assert!(
        record.contains("  resources: [\"configmaps\"]\n  verbs: [\"create\"]\n"),
        "{record}"
    );
    assert!(!record.contains("leases"), "{record}");
    let lease = role("kube-system");
    assert!(
        lease.contains("- apiGroups: [\"coordination.k8s.io\"]\n  resources: [\"leases\"]\n  resourceNames: [\"migration-leader\"]\n  verbs: [\"get\", \"update\"]\n"),
        "{lease}"
    );
    assert!(
        lease.contains("  resources: [\"leases\"]\n  verbs: [\"create\"]\n"),
        "{lease}"
    );
    assert_eq!(y.matches("kind: RoleBinding\n").count(), 2, "{y}");
}

#[test]
fn status_objects_get_configmaps_in_their_namespace_only() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), "", "unix:/run/sshbridge/admin.sock", "");
    cfg.ha.status_namespace = Some("sshbridge-status".into());
    let y = rbac(&cfg, &RbacOptions::default()).unwrap();
    assert!(!y.contains("kind: ClusterRole\n"), "{y}");
    let roles: Vec<&str> = y
        .split("---\n")
        .filter(|d| d.contains("\nkind: Role\n"))
        .collect();
    assert_eq!(roles.len(), 1, "{y}");
    assert!(
        roles[0].contains("  namespace: \"sshbridge-status\"\n"),
        "{}",
        roles[0]
    );
    assert_eq!(
        rules_of(&y, "Role"),
        [
            "- apiGroups: [\"\"]",
            "  resources: [\"configmaps\"]",
            "  verbs: [\"get\", \"list\", \"create\", \"update\"]",
        ],
        "{y}"
    );
}
