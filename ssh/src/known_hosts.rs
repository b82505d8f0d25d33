//! Strict known_hosts checking: parsed once per config load, consulted on
//! every handshake, never written to. An unknown host or a changed key is a
//! refusal, never a prompt.
//!
//! Understood line forms (OpenSSH `sshd(8)` "SSH_KNOWN_HOSTS FILE FORMAT"):
//! plain host patterns (comma lists, `*` / `?` wildcards, `!` negation,
//! `[host]:port` for ports other than 22), hashed `|1|salt|hash` entries,
//! `@cert-authority` lines (host certificates signed by that CA) and
//! `@revoked` lines (a key listed there is refused for every host).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Algorithm, Certificate, HashAlg, PublicKey, PublicKeyOrCertificate};
use sshbridge_config::HostPort;

mod error;

pub use error::{HostKeyError, KnownHostsError};

/// The names a node's host key may be listed under.
#[derive(Debug, Clone)]
pub struct HostIdentity {
    /// Node name (also accepted as a certificate principal).
    pub node: String,
    /// Node IP as text (accepted as a certificate principal).
    pub address: String,
    /// Where sshd is reached.
    pub ssh: HostPort,
}

impl HostIdentity {
    /// Host strings looked up in the file: the sshd host (in `[host]:port`
    /// form when the port is not 22) and the plain node name.
    pub fn candidates(&self) -> Vec<String> {
        let host = self.ssh.host.to_ascii_lowercase();
        let first = if self.ssh.port == 22 {
            host
        } else {
            format!("[{host}]:{}", self.ssh.port)
        };
        let name = self.node.to_ascii_lowercase();
        if name == first {
            vec![first]
        } else {
            vec![first, name]
        }
    }

    fn principals(&self) -> [&str; 3] {
        [&self.node, &self.address, &self.ssh.host]
    }

    fn principals_dedup(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in self.principals() {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    CertAuthority,
    Revoked,
}

#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    marker: Marker,
    hosts: Hosts,
    key: KeyData,
}

/// A parsed known_hosts file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
    entries: Vec<Entry>,
    /// Entries whose patterns are all plain host names (no wildcard, no
    /// negation), by each of those names: a lookup, not a scan, for the
    /// one-line-per-node files of large fleets.
    literal: HashMap<String, Vec<usize>>,
    /// The other entries (hashed, wildcards, negations), scanned.
    scanned: Vec<usize>,
}

impl KnownHosts {
    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<KnownHosts, KnownHostsError> {
        let text = std::fs::read_to_string(path).map_err(|source| KnownHostsError::Read {
            path: path.to_owned(),
            source,
        })?;
        KnownHosts::parse(path, &text)
    }

    /// Parse `text`; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<KnownHosts, KnownHostsError> {
        let mut entries = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let err = |reason: String| KnownHostsError::Syntax {
                path: path.to_owned(),
                line,
                reason,
            };
            let mut fields = trimmed.split_ascii_whitespace();
            let mut first = fields.next().unwrap_or_default();
            let marker = match first {
                "@cert-authority" => Marker::CertAuthority,
                "@revoked" => Marker::Revoked,
                m if m.starts_with('@') => return Err(err(format!("unknown marker {m}"))),
                _ => Marker::None,
            };
            if marker != Marker::None {
                first = fields
                    .next()
                    .ok_or_else(|| err("missing host patterns".into()))?;
            }
            let hosts = parse_hosts(first).map_err(err)?;
            let rest: Vec<&str> = fields.collect();
            if rest.len() < 2 {
                return Err(err(
                    "expected: [marker] hosts keytype base64-key [comment]".into()
                ));
            }
            let key = PublicKey::from_openssh(&format!("{} {}", rest[0], rest[1]))
                .map_err(|e| err(format!("unreadable {} key: {e}", rest[0])))?;
            entries.push(Entry {
                line,
                marker,
                hosts,
                key: key.key_data().clone(),
            });
        }
        let mut literal: HashMap<String, Vec<usize>> = HashMap::new();
        let mut scanned = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match e.hosts.literals() {
                Some(names) => names
                    .into_iter()
                    .for_each(|n| literal.entry(n.to_owned()).or_default().push(i)),
                None => scanned.push(i),
            }
        }
        Ok(KnownHosts {
            path: path.to_owned(),
            entries,
            literal,
            scanned,
        })
    }

    /// The entries covering one of `candidates`, in file order.
    fn matching<'a>(&'a self, candidates: &[String]) -> impl Iterator<Item = &'a Entry> {
        let mut found: Vec<usize> = candidates
            .iter()
            .filter_map(|c| self.literal.get(c))
            .flatten()
            .copied()
            .chain(
                self.scanned
                    .iter()
                    .copied()
                    .filter(|&i| self.entries[i].matches(candidates)),
            )
            .collect();
        found.sort_unstable();
        found.dedup();
        found.into_iter().map(|i| &self.entries[i])
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Key algorithms listed for this host (plain entries), in file order,
    /// and whether a `@cert-authority` line covers it. The session asks for
    /// these first so a host with several keys presents one we know.
    pub fn known_algorithms(&self, target: &HostIdentity) -> (Vec<Algorithm>, bool) {
        let candidates = target.candidates();
        let mut algs = Vec::new();
        let mut ca = false;
        for e in self.matching(&candidates) {
            match e.marker {
                Marker::None => {
                    let alg = e.key.algorithm();
                    if !algs.contains(&alg) {
                        algs.push(alg);
                    }
                }
                Marker::CertAuthority => ca = true,
                Marker::Revoked => {}
            }
        }
        (algs, ca)
    }

    /// Decide whether `presented` may be trusted for `target`. `now_unix`
    /// is the wall-clock time used for certificate validity.
    pub fn verify(
        &self,
        target: &HostIdentity,
        presented: &PublicKeyOrCertificate,
        now_unix: u64,
    ) -> Result<(), HostKeyError> {
        match presented {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.verify_plain(target, key.key_data())
            }
            PublicKeyOrCertificate::Certificate(cert) => self.verify_cert(target, cert, now_unix),
        }
    }

    fn revoked(&self, target: &HostIdentity, key: &KeyData) -> Result<(), HostKeyError> {
        match self
            .entries
            .iter()
            .find(|e| e.marker == Marker::Revoked && &e.key == key)
        {
            Some(e) => Err(HostKeyError::Revoked {
                node: target.node.clone(),
                addr: target.ssh.to_string(),
                file: self.path.clone(),
                line: e.line,
                fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
            }),
            None => Ok(()),
        }
    }

    fn verify_plain(&self, target: &HostIdentity, key: &KeyData) -> Result<(), HostKeyError> {
        self.revoked(target, key)?;
        let candidates = target.candidates();
        let mut lines = String::new();
        for e in self
            .matching(&candidates)
            .filter(|e| e.marker == Marker::None)
        {
            if &e.key == key {
                return Ok(());
            }
            if !lines.is_empty() {
                lines.push_str(", ");
            }
            let _ = write!(lines, "{}", e.line);
        }
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let (node, addr, file) = (
            target.node.clone(),
            target.ssh.to_string(),
            self.path.clone(),
        );
        if lines.is_empty() {
            Err(HostKeyError::Unknown {
                node,
                addr,
                file,
                candidates: candidates.join(", "),
                fingerprint,
            })
        } else {
            Err(HostKeyError::Mismatch {
                node,
                addr,
                file,
                lines,
                fingerprint,
            })
        }
    }

    fn verify_cert(
        &self,
        target: &HostIdentity,
        cert: &Certificate,
        now_unix: u64,
    ) -> Result<(), HostKeyError> {
        self.revoked(target, cert.public_key())?;
        self.revoked(target, cert.signature_key())?;
        let candidates = target.candidates();
        let Some(ca) = self
            .matching(&candidates)
            .find(|e| e.marker == Marker::CertAuthority && &e.key == cert.signature_key())
        else {
            // Like OpenSSH: a certificate from an unknown CA is judged by
            // the plain key inside it.
            return self.verify_plain(target, cert.public_key());
        };
        let invalid = |reason: String| HostKeyError::Certificate {
            node: target.node.clone(),
            addr: target.ssh.to_string(),
            file: self.path.clone(),
            line: ca.line,
            reason,
        };
        if cert.cert_type() != CertType::Host {
            return Err(invalid(
                "it is a user certificate, not a host certificate".into(),
            ));
        }
        if !cert.critical_options().is_empty() {
            return Err(invalid("it carries critical options".into()));
        }
        let ca_fp = ca.key.fingerprint(HashAlg::Sha256);
        if cert.validate_at(now_unix, [&ca_fp]).is_err() {
            if cert.verify_signature().is_err() {
                return Err(invalid("its signature does not verify".into()));
            }
            return Err(invalid(format!(
                "not valid now (valid from {} to {} unix time)",
                cert.valid_after(),
                cert.valid_before()
            )));
        }
        let listed = cert.valid_principals();
        if !listed.iter().any(|p| {
            target
                .principals()
                .iter()
                .any(|w| p.eq_ignore_ascii_case(w))
        }) {
            return Err(invalid(format!(
                "principals {listed:?} name none of {:?}",
                target.principals_dedup()
            )));
        }
        Ok(())
    }
}

impl Entry {
    fn matches(&self, candidates: &[String]) -> bool {
        candidates.iter().any(|c| self.hosts.matches(c))
    }
}

mod hosts;

use hosts::{parse_hosts, Hosts};

#[cfg(test)]
mod tests;
