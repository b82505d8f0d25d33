//! Files an operator or another tool wrote: known_hosts, the config file,
//! report files (`sshbridge report diff` inputs), the migration store.

use std::path::Path;

use sshbridge_config::HostPort;
use sshbridge_fuzz::{fuzz, Target};
use sshbridge_migrate::{FileStore, MigrationState};
use sshbridge_report::{diff, Report, Thresholds};
use sshbridge_ssh::{HostIdentity, KnownHosts};

#[test]
fn fuzz_known_hosts() {
    let seeds = [
        "10.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n",
        "[10.0.0.1]:2222,node-1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ comment\n",
        "@cert-authority *.example,10.0.0.* ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n",
        "@revoked * ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n# comment\n\n",
        "|1|c2FsdA==|aGFzaA== ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n",
    ];
    let targets = [
        HostIdentity {
            node: "node-1".into(),
            address: "10.0.0.1".into(),
            ssh: HostPort {
                host: "10.0.0.1".into(),
                port: 22,
            },
        },
        HostIdentity {
            node: "node-1".into(),
            address: "10.0.0.1".into(),
            ssh: HostPort {
                host: "10.0.0.1".into(),
                port: 2222,
            },
        },
    ];
    let target = Target {
        name: "known_hosts",
        seeds: seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        dictionary: vec![
            b"@cert-authority ",
            b"@revoked ",
            b"|1|",
            b"*",
            b"?",
            b"!",
            b",",
            b"[",
            b"]:",
            b"\n",
            b" ",
            b"ssh-rsa ",
            b"ecdsa-sha2-nistp256 ",
        ],
    };
    fuzz(target, |input| {
        let text = String::from_utf8_lossy(input);
        if let Ok(kh) = KnownHosts::parse(Path::new("fuzz/known_hosts"), &text) {
            for t in &targets {
                let _ = kh.known_algorithms(t);
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_config_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut seeds = vec![std::fs::read(root.join("config/example.toml")).expect("example")];
    for dir in [
        "config/tests/fixtures/valid",
        "config/tests/fixtures/invalid",
    ] {
        for e in std::fs::read_dir(root.join(dir))
            .expect("fixtures")
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "toml") {
                seeds.push(std::fs::read(e.path()).expect("fixture"));
            }
        }
    }
    let target = Target {
        name: "config_file",
        seeds,
        dictionary: vec![
            b"\n[[node]]\n",
            b" = ",
            b"\"",
            b"'",
            b"[",
            b"]",
            b"{",
            b"}",
            b"0s",
            b"1ms",
            b"99999999999h",
            b"-1",
            b"18446744073709551616",
            b"::/0",
            b"0.0.0.0:0",
        ],
    };
    fuzz(target, |input| {
        let text = String::from_utf8_lossy(input);
        let _ = sshbridge_config::parse(&text, Path::new("/fuzz/sshbridge.toml"));
        Ok(())
    });
}

#[test]
fn fuzz_report_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut seeds = Vec::new();
    for dir in ["bridge/tests/fixtures/reports"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "json") {
                    seeds.push(std::fs::read(e.path()).expect("report fixture"));
                }
            }
        }
    }
    let target = Target {
        name: "report_file",
        seeds,
        dictionary: vec![
            b"\"",
            b":",
            b",",
            b"{",
            b"}",
            b"[",
            b"]",
            b"null",
            b"1e308",
            b"-0",
            b"NaN",
            b"\"down\"",
            b"\"degraded\"",
            b"\"sshbridge.report/v2\"",
        ],
    };
    let thresholds = Thresholds::default();
    fuzz(target, |input| {
        let text = String::from_utf8_lossy(input);
        let Ok(r) = Report::from_json(&text, "fuzz.json") else {
            return Ok(());
        };
        let d = diff(&r, &r, &thresholds);
        if d.is_regression() {
            return Err(format!("a report regresses against itself: {d:?}"));
        }
        let again = Report::from_json(&r.to_json(), "again.json")
            .map_err(|e| format!("a loaded report does not load once written: {e}"))?;
        if again.to_json() != r.to_json() {
            return Err("a written report reads back different".into());
        }
        Ok(())
    });
}

#[test]
fn fuzz_migration_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("migration.json");
    let store = FileStore::new(&path);
    store.write(&MigrationState::default()).expect("save");
    let seeds = vec![std::fs::read(&path).expect("saved state")];
    let target = Target {
        name: "migration_store",
        seeds,
        dictionary: vec![
            b"\"",
            b":",
            b",",
            b"{",
            b"}",
            b"null",
            b"\"schema\": 1",
            b"\"schema\": 99",
            b"\"phase\"",
            b"\"nodes\": {\"n\": {}}",
        ],
    };
    let copy = dir.path().join("copy.json");
    fuzz(target, |input| {
        std::fs::write(&path, input).map_err(|e| e.to_string())?;
        let Ok(Some(state)) = FileStore::new(&path).read() else {
            return Ok(());
        };
        let other = FileStore::new(&copy);
        other
            .write(&state)
            .map_err(|e| format!("a loaded state cannot be saved: {e}"))?;
        let again = other
            .read()
            .map_err(|e| format!("a saved state does not load: {e}"))?;
        if again.as_ref() != Some(&state) {
            return Err("a saved state reads back different".into());
        }
        Ok(())
    });
}
