//! User certificate authorities for the e2e nodes: a CA key that signs the
//! bridge's identity (`ssh-keygen -s`), and what a node's sshd needs to
//! trust it (`TrustedUserCAKeys` + `AuthorizedPrincipalsFile`, no
//! authorized_keys).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::hostkeys::generate_ed25519;

/// The principal the e2e nodes accept for the bridge's user.
pub const PRINCIPAL: &str = "sshbridge-nodes";

/// A user CA.
#[derive(Debug, Clone)]
pub struct UserCa {
    key: PathBuf,
    /// The CA's public key file (what `TrustedUserCAKeys` lists).
    pub public_path: PathBuf,
}

impl UserCa {
    /// A new CA key at `dir/NAME`.
    pub fn generate(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let key = dir.join(name);
        generate_ed25519(&key, name)?;
        Ok(Self {
            public_path: key.with_extension("pub"),
            key,
        })
    }

    /// Signs the public key of `identity` (its `.pub` beside it) for
    /// `principals`, valid for `validity` (`ssh-keygen -V`), and writes the
    /// certificate to `out`.
    pub fn sign(
        &self,
        identity: &Path,
        key_id: &str,
        principals: &[&str],
        validity: &str,
        out: &Path,
    ) -> anyhow::Result<PathBuf> {
        let public = PathBuf::from(format!("{}.pub", identity.display()));
        let scratch = tempfile::tempdir()?;
        let copy = scratch.path().join("key.pub");
        std::fs::copy(&public, &copy).with_context(|| format!("reading {}", public.display()))?;
        let result = Command::new("ssh-keygen")
            .arg("-q")
            .arg("-s")
            .arg(&self.key)
            .args(["-I", key_id, "-n", &principals.join(","), "-V", validity])
            .arg(&copy)
            .output()
            .context("running ssh-keygen -s")?;
        if !result.status.success() {
            bail!(
                "ssh-keygen -s failed: {}",
                String::from_utf8_lossy(&result.stderr)
            );
        }
        std::fs::copy(scratch.path().join("key-cert.pub"), out)?;
        Ok(out.to_path_buf())
    }
}

/// What a node's sshd trusts for user certificates.
#[derive(Debug, Clone)]
pub struct UserCaTrust {
    /// CA public keys, all listed in `TrustedUserCAKeys`.
    pub cas: Vec<PathBuf>,
    /// `AuthorizedPrincipalsFile` contents.
    pub principals: Vec<String>,
}

impl UserCaTrust {
    /// Trust `cas` for [`PRINCIPAL`].
    pub fn of(cas: &[&UserCa]) -> Self {
        Self {
            cas: cas.iter().map(|c| c.public_path.clone()).collect(),
            principals: vec![PRINCIPAL.to_string()],
        }
    }

    /// The sshd_config lines, with the files they name written in `dir`.
    pub fn sshd_lines(&self, dir: &Path) -> anyhow::Result<String> {
        let mut keys = String::new();
        for ca in &self.cas {
            keys.push_str(&std::fs::read_to_string(ca)?);
        }
        let ca_file = dir.join("trusted_user_ca_keys");
        std::fs::write(&ca_file, keys)?;
        let principals = dir.join("authorized_principals");
        std::fs::write(&principals, self.principals.join("\n") + "\n")?;
        Ok(format!(
            "TrustedUserCAKeys {}\nAuthorizedPrincipalsFile {}\nAuthorizedKeysFile none\n",
            ca_file.display(),
            principals.display()
        ))
    }
}
