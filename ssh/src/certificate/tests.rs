//! Loading checks with certificates `ssh-keygen` signs.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

fn keygen(args: &[&str]) {
    let out = Command::new("ssh-keygen")
        .args(args)
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "{args:?}: {out:?}");
}

fn key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let p = path.to_str().expect("utf-8 path");
    keygen(&["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", p]);
    path
}

/// Signs `key`.pub with `ca`; returns the certificate's path.
fn sign(ca: &Path, key: &Path, extra: &[&str]) -> PathBuf {
    let pubkey = format!("{}.pub", key.display());
    let mut args = vec!["-q", "-s", ca.to_str().expect("utf-8"), "-I", "bridge-1"];
    args.extend_from_slice(extra);
    args.push(&pubkey);
    keygen(&args);
    PathBuf::from(format!("{}-cert.pub", key.display()))
}

fn load(cert: &Path, id: &Path) -> Result<CertificateInfo, CertificateError> {
    let identity = russh::keys::load_secret_key(id, None).expect("identity");
    CertificateInfo::load(cert, &identity, id, SystemTime::now())
}

#[test]
fn a_valid_user_certificate_loads_with_what_it_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, id) = (key(dir.path(), "ca"), key(dir.path(), "id"));
    let cert = sign(
        &ca,
        &id,
        &["-n", "sshbridge,ops", "-z", "42", "-V", "-5m:+1h"],
    );
    let info = load(&cert, &id).expect("valid certificate");
    assert_eq!(info.key_id, "bridge-1");
    assert_eq!(info.serial, 42);
    assert_eq!(info.principals, vec!["sshbridge", "ops"]);
    let left = info.remaining(SystemTime::now());
    assert!(
        left > Duration::from_secs(55 * 60) && left <= Duration::from_secs(3600),
        "{left:?}"
    );
    assert!(info.expires_within(Duration::from_secs(2 * 3600), SystemTime::now()));
    assert!(!info.expires_within(Duration::from_secs(30 * 60), SystemTime::now()));
    assert!(info.ca_fingerprint.starts_with("SHA256:"));
    assert!(info.describe().contains(&cert.display().to_string()));
}

#[test]
fn expired_and_not_yet_valid_certificates_name_the_file_and_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, id) = (key(dir.path(), "ca"), key(dir.path(), "id"));
    for (window, what) in [
        ("20200101:20200102", "expired"),
        ("+1d:+2d", "not yet valid"),
    ] {
        let cert = sign(&ca, &id, &["-n", "sshbridge", "-V", window]);
        let err = load(&cert, &id).expect_err("outside its window");
        let msg = err.to_string();
        assert!(
            matches!(err, CertificateError::OutsideValidity { .. })
                && msg.contains(&cert.display().to_string())
                && msg.contains(what)
                && msg.contains("valid from "),
            "{msg}"
        );
        if what == "expired" {
            assert!(
                msg.contains("2020-01-01T") && msg.contains("2020-01-02T"),
                "{msg}"
            );
        }
    }
}

#[test]
fn a_certificate_for_another_key_or_a_host_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, id, other) = (
        key(dir.path(), "ca"),
        key(dir.path(), "id"),
        key(dir.path(), "other"),
    );
    let cert = sign(&ca, &other, &["-n", "sshbridge"]);
    let err = load(&cert, &id).expect_err("another key");
    assert!(
        matches!(err, CertificateError::OtherKey { .. })
            && err.to_string().contains(&id.display().to_string()),
        "{err}"
    );
    let host = sign(&ca, &id, &["-h", "-n", "node-a"]);
    let err = load(&host, &id).expect_err("host certificate");
    assert!(matches!(err, CertificateError::NotUser { .. }), "{err}");
    std::fs::write(&host, "not a certificate\n").expect("write");
    let err = load(&host, &id).expect_err("garbage");
    assert!(
        matches!(err, CertificateError::Unreadable { .. })
            && err.to_string().contains("[ssh].certificate"),
        "{err}"
    );
}
