//! What `sshbridge doctor` asks of one node's sshd, step by step, keeping
//! each outcome: TCP, host key (and the known_hosts line that matched),
//! authentication, a forward to the kubelet (handed back for TLS).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelOpenFailure;
use sshbridge_config::Node;
use sshbridge_core::path::BoxStream;
use tokio::net::TcpStream;

use super::known_hosts::{HostIdentity, KnownHosts};
use super::{SshContext, SshSetupError};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Passed.
    Ok,
    /// Works, but needs attention.
    Warn,
    /// Failed; the message names the fix.
    Fail,
    /// Not run (an earlier step failed, or nothing to check).
    Skip,
}

/// One check of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Short name: `reachable`, `host key`, `authentication`, `forward`.
    pub check: &'static str,
    /// Outcome.
    pub verdict: Verdict,
    /// What was seen, and on failure what to do. Never key material.
    pub message: String,
}

/// The SSH checks of one node, and the forwarded kubelet stream when the
/// forward succeeded.
pub struct Diagnosis {
    /// One finding per check, in order.
    pub findings: Vec<Finding>,
    /// A direct-tcpip stream to `address:kubelet_port`, open while
    /// [`Diagnosis`] lives.
    pub kubelet: Option<BoxStream>,
    _session: Option<russh::client::Handle<Probe>>,
}

fn finding(check: &'static str, verdict: Verdict, message: String) -> Finding {
    Finding {
        check,
        verdict,
        message,
    }
}

/// Runs the SSH checks of `node` with the bridge's identity (and
/// certificate) and known_hosts; every network step is bounded by
/// `ssh.connect_timeout`. `certificate_error`: `[ssh].certificate` could
/// not be used (expired, other key...); `ctx` was then loaded without it
/// and authentication fails with that message.
pub async fn diagnose(
    ctx: &SshContext,
    node: &Node,
    kubelet_port: u16,
    certificate_error: Option<&str>,
) -> Diagnosis {
    let mut findings = Vec::new();
    let out = |findings: Vec<Finding>, rest: &[&'static str], why: &str| {
        let mut findings = findings;
        for c in rest {
            findings.push(finding(c, Verdict::Skip, why.to_string()));
        }
        Diagnosis {
            findings,
            kubelet: None,
            _session: None,
        }
    };
    let limit = ctx.config().connect_timeout;
    let addr = node.ssh_address.to_string();
    let started = Instant::now();
    let tcp = tokio::time::timeout(
        limit,
        TcpStream::connect((node.ssh_address.host.as_str(), node.ssh_address.port)),
    )
    .await;
    let tcp = match tcp {
        Ok(Ok(s)) => s,
        failed => {
            let why = match failed {
                Ok(Err(e)) => format!("failed: {e}"),
                _ => format!("got no answer within {limit:?} (ssh.connect_timeout)"),
            };
            let msg = format!("TCP connect to {addr} {why}; check that sshd runs and listens there ([[node]].ssh_address), the network path and the firewall");
            findings.push(finding("reachable", Verdict::Fail, msg));
            return out(findings, &AFTER_TCP, "needs a TCP connection");
        }
    };
    let ms = started.elapsed().as_millis();
    let msg = format!("TCP connect to {addr} in {ms} ms");
    findings.push(finding("reachable", Verdict::Ok, msg));
    let _ = tcp.set_nodelay(true);
    let target = HostIdentity {
        node: node.name.clone(),
        address: node.address.to_string(),
        ssh: node.ssh_address.clone(),
    };
    let mut config = super::connect::client_config(ctx, &target);
    config.window_on_consume = false;
    config.keepalive_interval = None;
    config.window_size = russh::client::Config::default().window_size;
    config.channel_buffer_size = russh::client::Config::default().channel_buffer_size;
    let seen = Arc::new(Mutex::new(None));
    let probe = Probe {
        known_hosts: ctx.known_hosts().clone(),
        target,
        seen: seen.clone(),
    };
    let connect = russh::client::connect_stream(Arc::new(config), tcp, probe);
    let handle = match tokio::time::timeout(limit, connect).await {
        Ok(r) => r,
        Err(_) => Err(russh::Error::ConnectionTimeout),
    };
    let host_key = sshbridge_core::lock(&seen).take();
    match (&handle, host_key) {
        (_, Some(Ok(msg))) => findings.push(finding("host key", Verdict::Ok, msg)),
        (_, Some(Err(msg))) => {
            findings.push(finding("host key", Verdict::Fail, msg));
            return out(findings, &AFTER_HOST_KEY, "needs a trusted host key");
        }
        (Err(e), None) => {
            findings.push(finding(
                "host key",
                Verdict::Fail,
                format!("SSH handshake with {addr} failed before a host key was offered: {e}; check that sshd there is OpenSSH and accepts our algorithms"),
            ));
            return out(findings, &AFTER_HOST_KEY, "needs an SSH handshake");
        }
        (Ok(_), None) => unreachable!("russh checks the host key before connect_stream returns"),
    }
    let mut handle = match handle {
        Ok(h) => h,
        Err(e) => {
            findings.push(finding(
                "authentication",
                Verdict::Fail,
                format!("SSH handshake with {addr} failed after the host key: {e}"),
            ));
            return out(findings, &AFTER_AUTH, "needs a session");
        }
    };
    let (verdict, message) = match certificate_error {
        Some(e) => (
            Verdict::Fail,
            format!("{e} (the bridge cannot log in to any node with it)"),
        ),
        None => authenticate(ctx, &mut handle, &addr, limit).await,
    };
    findings.push(finding("authentication", verdict, message));
    if verdict == Verdict::Fail {
        return out(findings, &AFTER_AUTH, "needs an authenticated session");
    }
    let host = node.address.to_string();
    let open =
        handle.channel_open_direct_tcpip(host.clone(), u32::from(kubelet_port), "127.0.0.1", 0);
    let target = sshbridge_config::HostPort {
        host,
        port: kubelet_port,
    };
    let user = &ctx.config().user;
    let kubelet: Option<BoxStream> = match tokio::time::timeout(limit, open).await {
        Ok(Ok(channel)) => {
            findings.push(finding(
                "forward",
                Verdict::Ok,
                format!("sshd at {addr} opened a forward to {target} (the kubelet port)"),
            ));
            Some(Box::new(channel.into_stream()))
        }
        Ok(Err(russh::Error::ChannelOpenFailure(f))) => {
            let message = match f {
                ChannelOpenFailure::AdministrativelyProhibited => format!(
                    "sshd at {addr} refused to forward to {target} for user {user} (administratively prohibited): \
                     set AllowTcpForwarding local and PermitOpen {target} for that user; \
                     `sshbridge manifests node-sshd` prints the block"
                ),
                ChannelOpenFailure::ConnectFailed => format!(
                    "sshd at {addr} could not connect to {target}: is the kubelet listening there? check health.kubelet_port"
                ),
                other => format!("sshd at {addr} refused to forward to {target}: {other:?}"),
            };
            findings.push(finding("forward", Verdict::Fail, message));
            None
        }
        Ok(Err(e)) => {
            findings.push(finding(
                "forward",
                Verdict::Fail,
                format!(
                    "the SSH session with {addr} failed while opening a forward to {target}: {e}"
                ),
            ));
            None
        }
        Err(_) => {
            findings.push(finding(
                "forward",
                Verdict::Fail,
                format!("sshd at {addr} did not answer a forward to {target} within {limit:?}"),
            ));
            None
        }
    };
    Diagnosis {
        findings,
        kubelet,
        _session: Some(handle),
    }
}

const AFTER_TCP: [&str; 3] = ["host key", "authentication", "forward"];
const AFTER_HOST_KEY: [&str; 2] = ["authentication", "forward"];
const AFTER_AUTH: [&str; 1] = ["forward"];

/// Authentication with the bridge's certificate, or its plain key.
async fn authenticate(
    ctx: &SshContext,
    handle: &mut russh::client::Handle<Probe>,
    addr: &str,
    limit: Duration,
) -> (Verdict, String) {
    let identity = ctx.identity.clone();
    let user = ctx.config().user.clone();
    let cert = ctx.certificate();
    let attempt = async {
        if let Some(c) = cert {
            return handle
                .authenticate_openssh_cert(user.clone(), identity.clone(), c.cert.clone())
                .await;
        }
        let hash = if identity.algorithm().is_rsa() {
            handle
                .best_supported_rsa_hash()
                .await?
                .unwrap_or(Some(HashAlg::Sha256))
        } else {
            None
        };
        let key = PrivateKeyWithHashAlg::new(identity.clone(), hash);
        handle.authenticate_publickey(user.clone(), key).await
    };
    let accepted = match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(r)) => r.success(),
        Ok(Err(e)) => {
            return (
                Verdict::Fail,
                format!("authentication with {addr} failed: {e}"),
            )
        }
        Err(_) => {
            let msg = format!("sshd at {addr} did not finish authentication within {limit:?}");
            return (Verdict::Fail, msg);
        }
    };
    let fingerprint = identity.public_key().fingerprint(HashAlg::Sha256);
    let Some(cert) = cert else {
        return if accepted {
            let file = ctx.config().identity.display();
            let msg = format!("user {user} logged in with public key {fingerprint} ({file}; a plain key has no expiry)");
            (Verdict::Ok, msg)
        } else {
            (Verdict::Fail, format!(
                "sshd at {addr} refused public key {fingerprint} for user {user}: add it to that user's \
                 authorized_keys on the node (`sshbridge manifests node-sshd --form authorized-keys` prints the line)"
            ))
        };
    };
    let (what, principals) = (cert.describe(), cert.principals.join(","));
    if !accepted {
        return (Verdict::Fail, format!(
            "sshd at {addr} refused {what} with principals [{principals}] for user {user}: either the node \
             does not trust its CA {} (unknown CA: add it to TrustedUserCAKeys) or accepts none of \
             those principals for {user} (AuthorizedPrincipalsFile); \
             `sshbridge manifests node-sshd --user-ca CA.pub` prints the lines",
            cert.ca_fingerprint
        ));
    }
    let now = SystemTime::now();
    let left = humantime::format_duration(Duration::from_secs(cert.remaining(now).as_secs()));
    let until = super::certificate::rfc3339(cert.valid_before);
    if cert.expires_within(ctx.config().certificate_warn_before, now) {
        return (Verdict::Warn, format!(
            "user {user} logged in with {what}, principals [{principals}], but it expires at {until} \
             ({left} left, less than ssh.certificate_warn_before): issue a new one and reload"
        ));
    }
    let msg = format!("user {user} logged in with {what}, principals [{principals}], valid until {until} ({left} left)");
    (Verdict::Ok, msg)
}

/// russh's callbacks for the doctor's one connection: judge the host key
/// and remember the verdict (and the matching known_hosts line).
pub(crate) struct Probe {
    known_hosts: KnownHosts,
    target: HostIdentity,
    seen: Arc<Mutex<Option<Result<String, String>>>>,
}

impl russh::client::Handler for Probe {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let offered = describe(key);
        let verdict = match self.known_hosts.verify(&self.target, key, now) {
            Ok(()) => Ok(
                match matching_line(&self.known_hosts, &self.target, key, now) {
                    Some(line) => format!(
                        "{offered} matches {} line {line}",
                        self.known_hosts.path().display()
                    ),
                    None => format!("{offered} trusted by {}", self.known_hosts.path().display()),
                },
            ),
            Err(e) => Err(format!("{e} (offered: {offered})")),
        };
        let ok = verdict.is_ok();
        *sshbridge_core::lock(&self.seen) = Some(verdict);
        Ok(ok)
    }
}

/// `ssh-ed25519 SHA256:...`, or `host certificate (ssh-ed25519 SHA256:...)`.
fn describe(key: &PublicKeyOrCertificate) -> String {
    match key {
        PublicKeyOrCertificate::PublicKey { key, .. } => format!(
            "{} {}",
            key.algorithm().as_str(),
            key.fingerprint(HashAlg::Sha256)
        ),
        PublicKeyOrCertificate::Certificate(c) => format!(
            "host certificate of {} key {} signed by CA {}",
            c.algorithm().as_str(),
            c.public_key().fingerprint(HashAlg::Sha256),
            c.signature_key().fingerprint(HashAlg::Sha256)
        ),
    }
}

/// The first line of the file that trusts `key` on its own (the file as a
/// whole already did): each line is parsed and checked alone.
fn matching_line(
    kh: &KnownHosts,
    target: &HostIdentity,
    key: &PublicKeyOrCertificate,
    now: u64,
) -> Option<usize> {
    let text = std::fs::read_to_string(kh.path()).ok()?;
    text.lines().enumerate().find_map(|(i, line)| {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') || t.starts_with("@revoked") {
            return None;
        }
        let one = KnownHosts::parse(kh.path(), line).ok()?;
        one.verify(target, key, now).ok().map(|()| i + 1)
    })
}

/// The `authorized_keys` text of the identity's public key
/// (`ssh-ed25519 AAAA... sshbridge`), for `manifests node-sshd`.
pub fn public_key_line(identity: &Path) -> Result<String, SshSetupError> {
    let key =
        russh::keys::load_secret_key(identity, None).map_err(|e| SshSetupError::Identity {
            path: identity.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut public = key.public_key().clone();
    public.set_comment("sshbridge");
    public.to_openssh().map_err(|e| SshSetupError::Identity {
        path: identity.to_path_buf(),
        reason: e.to_string(),
    })
}
