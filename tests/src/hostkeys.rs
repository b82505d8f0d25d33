//! SSH key material made with the real `ssh-keygen`: the bridge's client
//! identity, node host keys, a host certificate authority, and known_hosts
//! files in the three forms the bridge must accept (plain, hashed,
//! `@cert-authority`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Runs `ssh-keygen` with `args`, failing with its stderr.
pub fn ssh_keygen(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ssh-keygen")
        .args(args)
        .output()
        .context("running ssh-keygen (install openssh-client)")?;
    if !out.status.success() {
        bail!(
            "ssh-keygen {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Generates an ed25519 key pair at `path` (private, mode 0600) and
/// `path.pub`; returns the public key line without its comment.
pub fn generate_ed25519(path: &Path, comment: &str) -> anyhow::Result<String> {
    let p = path.to_str().context("non-UTF-8 key path")?;
    ssh_keygen(&["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", p])?;
    public_key(&path.with_extension("pub"))
}

/// The `TYPE BASE64` part of a `.pub` file.
pub fn public_key(pub_path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(pub_path)
        .with_context(|| format!("reading {}", pub_path.display()))?;
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(kind), Some(b64)) => Ok(format!("{kind} {b64}")),
        _ => bail!("{} holds no public key", pub_path.display()),
    }
}

/// The bridge's SSH identity (what `[ssh] identity` points at).
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// Private key file, mode 0600.
    pub private: PathBuf,
    /// `ssh-ed25519 AAAA...`, for authorized_keys.
    pub public: String,
}

impl ClientKey {
    /// A new ed25519 identity at `dir/NAME`.
    pub fn generate(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let private = dir.join(name);
        let public = generate_ed25519(&private, "sshbridge-test-client")?;
        Ok(Self { private, public })
    }
}

/// A host certificate authority: signs node host keys so a single
/// `@cert-authority` line vouches for every node.
#[derive(Debug, Clone)]
pub struct HostCa {
    key: PathBuf,
    /// `ssh-ed25519 AAAA...` of the CA.
    pub public: String,
}

impl HostCa {
    /// A new CA key at `dir/host_ca`.
    pub fn generate(dir: &Path) -> anyhow::Result<Self> {
        let key = dir.join("host_ca");
        let public = generate_ed25519(&key, "sshbridge-test-host-ca")?;
        Ok(Self { key, public })
    }

    /// Signs the host public key at `host_pub` for `principals`; returns the
    /// path of the `-cert.pub` file ssh-keygen wrote next to it.
    pub fn sign_host(&self, host_pub: &Path, principals: &[String]) -> anyhow::Result<PathBuf> {
        let ca = self.key.to_str().context("non-UTF-8 path")?;
        let key = host_pub.to_str().context("non-UTF-8 path")?;
        let names = principals.join(",");
        ssh_keygen(&[
            "-q",
            "-s",
            ca,
            "-I",
            "sshbridge-test-host",
            "-h",
            "-n",
            &names,
            key,
        ])?;
        let stem = key.strip_suffix(".pub").unwrap_or(key);
        Ok(PathBuf::from(format!("{stem}-cert.pub")))
    }
}

/// How a known_hosts file names the nodes' keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownHostsStyle {
    /// `[addr]:port ssh-ed25519 KEY` per node.
    Plain,
    /// The same, then hashed with `ssh-keygen -H` (`|1|salt|hash ...`).
    Hashed,
    /// `@cert-authority [addr]:port CAKEY` per node; nodes present host
    /// certificates signed by the CA.
    CertAuthority,
}

/// The host pattern OpenSSH uses for `addr`: bare for port 22, else
/// `[host]:port`.
pub fn host_pattern(addr: SocketAddr) -> String {
    if addr.port() == 22 {
        addr.ip().to_string()
    } else {
        format!("[{}]:{}", addr.ip(), addr.port())
    }
}

/// Writes a known_hosts file at `path` for `entries` (sshd address, host
/// public key). `ca` is required for [`KnownHostsStyle::CertAuthority`].
pub fn write_known_hosts(
    path: &Path,
    entries: &[(SocketAddr, String)],
    style: KnownHostsStyle,
    ca: Option<&HostCa>,
) -> anyhow::Result<()> {
    let mut text = String::from("# written by sshbridge-tests\n");
    for (addr, key) in entries {
        let pattern = host_pattern(*addr);
        match style {
            KnownHostsStyle::Plain | KnownHostsStyle::Hashed => {
                text.push_str(&format!("{pattern} {key}\n"))
            }
            KnownHostsStyle::CertAuthority => {
                let ca = ca.context("a @cert-authority known_hosts needs the host CA")?;
                text.push_str(&format!("@cert-authority {pattern} {}\n", ca.public));
            }
        }
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    if style == KnownHostsStyle::Hashed {
        let p = path.to_str().context("non-UTF-8 path")?;
        ssh_keygen(&["-H", "-f", p])?;
        let _ = std::fs::remove_file(format!("{p}.old"));
        let hashed = std::fs::read_to_string(path)?;
        if !hashed.lines().any(|l| l.starts_with("|1|")) {
            bail!("ssh-keygen -H left {} unhashed", path.display());
        }
    }
    Ok(())
}
