//! `sshbridge doctor` against real sshd nodes configured from the
//! generated Match block: a healthy node, and nodes broken in one way each
//! (wrong host key, `AllowTcpForwarding no`, a kubelet certificate from
//! another CA), each diagnosed by name in the table and in `-o json`, with
//! exit codes 1 (a check failed) and 0 (all ok). No daemon runs.

use std::time::Instant;

use sshbridge_tests::node_sshd::{GeneratedSshd, Lab};
use sshbridge_tests::{hostkeys, sshbridge_cli};

use crate::support::within;

const NODES: [&str; 4] = [
    "healthy",
    "wrong-host-key",
    "no-forwarding",
    "foreign-kubelet",
];

#[tokio::test]
async fn doctor_names_what_is_wrong_with_each_broken_node() -> anyhow::Result<()> {
    within(60, async {
        let started = Instant::now();
        let lab = Lab::new(&NODES, &["foreign-kubelet"]).await?;
        lab.write_known_hosts(&[])?;
        let config = lab.bridge_config()?;
        let path = config.write()?;
        let mut sshds = Vec::new();
        let mut known = Vec::new();
        for name in NODES {
            let mut text = lab.generate(&path, &["--node", name]).await?;
            if name == "no-forwarding" {
                assert!(text.contains("    AllowTcpForwarding local\n"), "{text}");
                text = text.replace("AllowTcpForwarding local", "AllowTcpForwarding no");
            }
            let sshd = GeneratedSshd::start(
                &lab.dir.path().join(name),
                lab.node(name).ssh_addr,
                &text,
                std::slice::from_ref(&lab.client_key.public),
            )
            .await?;
            let key = if name == "wrong-host-key" {
                hostkeys::generate_ed25519(&lab.dir.path().join("impostor"), "impostor")?
            } else {
                sshd.host_key.clone()
            };
            known.push((sshd.addr, key));
            sshds.push(sshd);
        }
        lab.write_known_hosts(&known)?;
        let kh = lab.known_hosts().display().to_string();
        let config_arg = path.display().to_string();

        let json = sshbridge_cli(["doctor", "--config", &config_arg, "-o", "json"]).await?;
        assert_eq!(json.code, Some(1), "a check failed: {json:?}");
        let doc: serde_json::Value = serde_json::from_str(&json.stdout)?;
        assert_eq!(doc["result"], "fail", "{doc}");
        let check = |node: &str, name: &str| check(&doc, node, name);
        // Healthy: every check passes; the host key names its line (line
        // 1 is the file's comment, the nodes follow in order).
        for c in [
            "reachable",
            "host key",
            "authentication",
            "forward",
            "kubelet tls",
        ] {
            let (result, message) = check("healthy", c);
            assert_eq!(result, "ok", "healthy {c}: {message}");
        }
        assert_eq!(check("healthy", "konnectivity").0, "skip");
        let (_, m) = check("healthy", "host key");
        assert!(m.contains(&format!("matches {kh} line 2")), "{m}");
        let (_, m) = check("healthy", "kubelet tls");
        assert!(
            m.contains("sshbridge-e2e-ca") && m.contains("verified"),
            "{m}"
        );

        let expect = |node: &str, failing: &str, wants: &[&str], skipped: &[&str]| {
            let (result, message) = check(node, failing);
            assert_eq!(result, "fail", "{node} {failing}: {message}");
            for w in wants {
                assert!(
                    message.contains(w),
                    "{node} {failing} must say {w:?}: {message}"
                );
            }
            for s in skipped {
                assert_eq!(check(node, s).0, "skip", "{node} {s} after {failing}");
            }
        };
        expect(
            "wrong-host-key",
            "host key",
            &[
                "does not match",
                &kh,
                "line(s) 3",
                "offered: ssh-ed25519 SHA256:",
            ],
            &["authentication", "forward", "kubelet tls"],
        );
        expect(
            "no-forwarding",
            "forward",
            &[
                "administratively prohibited",
                "AllowTcpForwarding local",
                "manifests node-sshd",
            ],
            &["kubelet tls"],
        );
        assert_eq!(check("no-forwarding", "authentication").0, "ok");
        expect(
            "foreign-kubelet",
            "kubelet tls",
            &["some-other-ca", "unknown issuer", "health.kubelet_ca"],
            &[],
        );
        assert_eq!(check("foreign-kubelet", "forward").0, "ok");
        // No key material in the output, only fingerprints.
        let private = std::fs::read_to_string(&lab.client_key.private)?;
        let body = private.lines().nth(1).unwrap_or("-");
        assert!(!json.stdout.contains(body), "the identity leaked");

        // The table says the same, one line per check.
        let table = sshbridge_cli(["doctor", "--config", &config_arg]).await?;
        assert_eq!(table.code, Some(1), "{table:?}");
        eprintln!("---- sshbridge doctor ----\n{}", table.stdout);
        for (node, line) in [
            ("wrong-host-key", "  host key        fail    host key "),
            ("no-forwarding", "  forward         fail    sshd at "),
            ("foreign-kubelet", "  kubelet tls     fail    "),
        ] {
            assert!(
                table.stdout.contains(&format!("node {node} ")),
                "{}",
                table.stdout
            );
            assert!(table.stdout.contains(line), "{node}: {}", table.stdout);
        }
        assert!(table.stdout.contains("4 node(s): "), "{}", table.stdout);

        // Only the healthy node: exit 0.
        let ok = sshbridge_cli(["doctor", "healthy", "--config", &config_arg]).await?;
        assert_eq!(ok.code, Some(0), "{ok:?}");
        assert!(!ok.stdout.contains("wrong-host-key"), "{}", ok.stdout);
        eprintln!("doctor e2e took {:?}", started.elapsed());
        drop(sshds);
        Ok(())
    })
    .await
}

/// The `(result, message)` of check `check` of node `node` in doctor's
/// `-o json` document; panics naming what is missing.
pub(super) fn check(doc: &serde_json::Value, node: &str, check: &str) -> (String, String) {
    let n = doc["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == node))
        .unwrap_or_else(|| panic!("no node {node} in {doc}"));
    let c = n["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["check"] == check))
        .unwrap_or_else(|| panic!("no check {check} for {node} in {n}"));
    (
        c["result"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    )
}
