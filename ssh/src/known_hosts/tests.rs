use std::process::Command;

use super::*;

const NOW: u64 = 1_700_000_000;

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A fresh ed25519 key named `name`; returns its public line.
    fn key(&self, name: &str) -> String {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
            .arg(self.path(name))
            .output()
            .expect("run ssh-keygen");
        assert!(out.status.success(), "ssh-keygen: {out:?}");
        self.read(&format!("{name}.pub"))
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name))
            .expect("read key")
            .trim()
            .to_string()
    }

    /// Sign `name`.pub with CA `ca`; returns the certificate line.
    fn sign(&self, ca: &str, name: &str, host: bool, principals: &str) -> String {
        let mut cmd = Command::new("ssh-keygen");
        cmd.arg("-q")
            .arg("-s")
            .arg(self.path(ca))
            .args(["-I", "test"]);
        if host {
            cmd.arg("-h");
        }
        let out = cmd
            .args(["-n", principals, "-V", "20230101:20300101"])
            .arg(self.path(&format!("{name}.pub")))
            .output()
            .expect("run ssh-keygen -s");
        assert!(out.status.success(), "ssh-keygen -s: {out:?}");
        self.read(&format!("{name}-cert.pub"))
    }
}

fn plain(line: &str) -> PublicKeyOrCertificate {
    PublicKeyOrCertificate::PublicKey {
        key: PublicKey::from_openssh(line).expect("public key"),
        hash_alg: None,
    }
}

fn cert(line: &str) -> PublicKeyOrCertificate {
    PublicKeyOrCertificate::Certificate(Certificate::from_openssh(line).expect("certificate"))
}

fn node(name: &str, ip: &str, host: &str, port: u16) -> HostIdentity {
    HostIdentity {
        node: name.into(),
        address: ip.into(),
        ssh: HostPort {
            host: host.into(),
            port,
        },
    }
}

fn kh(text: &str) -> KnownHosts {
    KnownHosts::parse(Path::new("/etc/sshbridge/known_hosts"), text).expect("parse")
}

#[test]
fn plain_entry_accepts_its_key_and_a_mismatch_names_all_lines() {
    let k = Keys::new();
    let (a, b, c) = (k.key("a"), k.key("b"), k.key("c"));
    let file = kh(&format!(
        "# comment\n\nother {b}\n10.0.0.5,node-a {a}\nnode-a {c}\n"
    ));
    let n = node("node-a", "10.0.0.5", "10.0.0.5", 22);
    file.verify(&n, &plain(&a), NOW)
        .expect("key on line 4 accepted");
    file.verify(&n, &plain(&c), NOW)
        .expect("key on line 5 accepted");
    let err = file.verify(&n, &plain(&b), NOW).unwrap_err();
    assert!(
        matches!(&err, HostKeyError::Mismatch { lines, .. } if lines == "4, 5"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("node-a") && msg.contains("10.0.0.5:22") && msg.contains("line(s) 4, 5"),
        "{msg}"
    );
}

#[test]
fn unknown_host_is_refused() {
    let k = Keys::new();
    let a = k.key("a");
    let file = kh(&format!("10.0.0.6 {a}\n"));
    let err = file
        .verify(&node("node-a", "10.0.0.5", "10.0.0.5", 22), &plain(&a), NOW)
        .unwrap_err();
    assert!(matches!(err, HostKeyError::Unknown { .. }), "{err:?}");
    assert!(err.to_string().contains("ssh-keyscan"), "{err}");
}

#[test]
fn non_default_port_needs_the_bracketed_form() {
    let k = Keys::new();
    let a = k.key("a");
    let bracketed = kh(&format!("[10.0.0.5]:2222 {a}\n"));
    let bare = kh(&format!("10.0.0.5 {a}\n"));
    let on_2222 = node("n1", "10.0.0.5", "10.0.0.5", 2222);
    bracketed
        .verify(&on_2222, &plain(&a), NOW)
        .expect("[host]:port accepted");
    assert!(bare.verify(&on_2222, &plain(&a), NOW).is_err());
    let on_22 = node("n1", "10.0.0.5", "10.0.0.5", 22);
    assert!(bracketed.verify(&on_22, &plain(&a), NOW).is_err());
}

#[test]
fn wildcards_negation_and_node_name() {
    let k = Keys::new();
    let a = k.key("a");
    let file = kh(&format!("10.0.0.*,!10.0.0.9 {a}\nNODE-? {a}\n"));
    file.verify(&node("x", "1.1.1.1", "10.0.0.5", 22), &plain(&a), NOW)
        .expect("wildcard");
    assert!(file
        .verify(&node("x", "1.1.1.1", "10.0.0.9", 22), &plain(&a), NOW)
        .is_err());
    // Matched by node name although the sshd address is listed nowhere.
    file.verify(&node("node-b", "1.1.1.1", "192.0.2.1", 22), &plain(&a), NOW)
        .expect("node name, case-insensitive");
    assert!(file
        .verify(
            &node("node-bb", "1.1.1.1", "192.0.2.1", 22),
            &plain(&a),
            NOW
        )
        .is_err());
}

#[test]
fn hashed_entries_from_ssh_keygen_match() {
    let k = Keys::new();
    let (a, b) = (k.key("a"), k.key("b"));
    let path = k.path("known_hosts");
    std::fs::write(&path, format!("10.0.0.5 {a}\n[10.0.0.6]:2222 {b}\n")).expect("write");
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&path)
        .output()
        .expect("run ssh-keygen -H");
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(
        text.lines().all(|l| l.starts_with("|1|")),
        "not hashed: {text}"
    );
    let file = KnownHosts::load(&path).expect("load hashed");
    file.verify(&node("n", "1.1.1.1", "10.0.0.5", 22), &plain(&a), NOW)
        .expect("hashed host");
    file.verify(&node("n", "1.1.1.1", "10.0.0.6", 2222), &plain(&b), NOW)
        .expect("hashed [host]:port");
    let err = file
        .verify(&node("n", "1.1.1.1", "10.0.0.5", 22), &plain(&b), NOW)
        .unwrap_err();
    assert!(
        matches!(&err, HostKeyError::Mismatch { lines, .. } if lines == "1"),
        "{err:?}"
    );
    assert!(file
        .verify(&node("n", "1.1.1.1", "10.0.0.7", 22), &plain(&a), NOW)
        .is_err());
}

#[test]
fn revoked_key_is_refused_even_when_listed() {
    let k = Keys::new();
    let a = k.key("a");
    let file = kh(&format!("10.0.0.5 {a}\n@revoked * {a}\n"));
    let err = file
        .verify(&node("n", "10.0.0.5", "10.0.0.5", 22), &plain(&a), NOW)
        .unwrap_err();
    assert!(
        matches!(err, HostKeyError::Revoked { line: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn cert_authority_accepts_valid_host_certificates_only() {
    let k = Keys::new();
    let ca = k.key("ca");
    k.key("host");
    let good = k.sign("ca", "host", true, "node-a");
    let file = kh(&format!("@cert-authority 10.0.0.*,node-* {ca}\n"));
    let n = node("node-a", "10.0.0.5", "10.0.0.5", 22);
    file.verify(&n, &cert(&good), NOW).expect("valid host cert");

    // Principal names the node address instead: also fine.
    let by_ip = k.sign("ca", "host", true, "10.0.0.5");
    file.verify(&n, &cert(&by_ip), NOW)
        .expect("principal = address");

    let wrong = k.sign("ca", "host", true, "node-z");
    let err = file.verify(&n, &cert(&wrong), NOW).unwrap_err();
    assert!(
        matches!(&err, HostKeyError::Certificate { reason, line: 1, .. } if reason.contains("principals")),
        "{err:?}"
    );

    let err = file.verify(&n, &cert(&good), 2_000_000_000).unwrap_err();
    assert!(
        matches!(&err, HostKeyError::Certificate { reason, .. } if reason.contains("not valid now")),
        "{err:?}"
    );

    let user = k.sign("ca", "host", false, "node-a");
    let err = file.verify(&n, &cert(&user), NOW).unwrap_err();
    assert!(
        matches!(&err, HostKeyError::Certificate { reason, .. } if reason.contains("user certificate")),
        "{err:?}"
    );

    // A CA listed for other hosts does not vouch for this one.
    let other = node("db-1", "192.0.2.9", "192.0.2.9", 22);
    let err = file.verify(&other, &cert(&good), NOW).unwrap_err();
    assert!(matches!(err, HostKeyError::Unknown { .. }), "{err:?}");
}

#[test]
fn certificate_from_unknown_ca_falls_back_to_the_plain_key() {
    let k = Keys::new();
    k.key("ca");
    let host = k.key("host");
    let c = k.sign("ca", "host", true, "node-a");
    let file = kh(&format!("10.0.0.5 {host}\n"));
    file.verify(&node("node-a", "10.0.0.5", "10.0.0.5", 22), &cert(&c), NOW)
        .expect("inner key listed");
    let file = kh(&format!(
        "10.0.0.5 {host}\n@revoked * {}\n",
        k.read("ca.pub")
    ));
    let err = file
        .verify(&node("node-a", "10.0.0.5", "10.0.0.5", 22), &cert(&c), NOW)
        .unwrap_err();
    assert!(
        matches!(err, HostKeyError::Revoked { line: 2, .. }),
        "revoked CA: {err:?}"
    );
}

#[test]
fn known_algorithms_lists_this_hosts_key_types() {
    let k = Keys::new();
    let a = k.key("a");
    let file = kh(&format!("10.0.0.5 {a}\n@cert-authority node-* {a}\n"));
    let (algs, ca) = file.known_algorithms(&node("node-a", "10.0.0.5", "10.0.0.5", 22));
    assert_eq!(algs, vec![Algorithm::Ed25519]);
    assert!(ca);
    let (algs, ca) = file.known_algorithms(&node("x", "10.0.0.6", "10.0.0.6", 22));
    assert!(algs.is_empty() && !ca);
}

#[test]
fn malformed_lines_name_file_and_line() {
    let err = KnownHosts::parse(Path::new("/kh"), "# ok\nhost ssh-ed25519\n").unwrap_err();
    assert!(err.to_string().starts_with("/kh:2:"), "{err}");
    let err = KnownHosts::parse(Path::new("/kh"), "@bogus h ssh-ed25519 AAAA\n").unwrap_err();
    assert!(err.to_string().contains("unknown marker"), "{err}");
    let err = KnownHosts::parse(Path::new("/kh"), "h ssh-ed25519 !!!notbase64\n").unwrap_err();
    assert!(err.to_string().starts_with("/kh:1:"), "{err}");
}

/// Plain lines are found by lookup, the others by a scan; together they
/// give the same lines, in file order, as a scan of every line would.
#[test]
fn looked_up_and_scanned_lines_merge_in_file_order() {
    let k = Keys::new();
    let (a, b) = (k.key("a"), k.key("b"));
    let mut text = format!("10.0.0.*,!10.0.0.9 {a}\n");
    for i in 0..1000 {
        text.push_str(&format!("[10.1.{}.{}]:2222 {a}\n", i / 250, i % 250));
    }
    text.push_str(&format!(
        "NODE-A,10.0.0.5 {a}\n[10.0.0.5]:2222,Other {a}\n!x,node-a {a}\n"
    ));
    let file = kh(&text);
    let n = node("node-a", "10.0.0.5", "10.0.0.5", 2222);
    let err = file.verify(&n, &plain(&b), NOW).unwrap_err();
    // Line 1 is for port 22 only; 1002 by name, 1003 by [host]:port,
    // 1004 by name (negation of another host).
    assert!(
        matches!(&err, HostKeyError::Mismatch { lines, .. } if lines == "1002, 1003, 1004"),
        "{err:?}"
    );
    file.verify(&n, &plain(&a), NOW).expect("listed");
    let far = node("n-999", "10.1.3.249", "10.1.3.249", 2222);
    file.verify(&far, &plain(&a), NOW)
        .expect("the 1000th plain line");
    assert!(file
        .verify(&node("n", "10.0.0.9", "10.0.0.9", 22), &plain(&a), NOW)
        .is_err());
    file.verify(&node("n", "10.0.0.8", "10.0.0.8", 22), &plain(&a), NOW)
        .expect("wildcard line");
}
