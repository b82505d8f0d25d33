//! The flags with which `report` and `migrate` authenticate to a TCP admin
//! API (`[admin] client_ca` or `token_file` on the daemon's side).

use std::path::PathBuf;

use clap::Args;
use sshbridge::admin_client::{AdminAddr, Credentials};

/// `--admin-ca`, `--admin-cert`, `--admin-key`, `--token-file`.
#[derive(Debug, Clone, Args)]
pub struct AdminAuthArgs {
    /// CA that verifies the admin server's TLS certificate; given, the
    /// admin API is reached over TLS. Needed with --admin-cert.
    #[arg(long, value_name = "FILE", global = true)]
    admin_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a TCP admin API with [admin] client_ca.
    #[arg(long, value_name = "FILE", global = true, requires = "admin_key")]
    admin_cert: Option<PathBuf>,
    /// Private key of --admin-cert (PEM).
    #[arg(long, value_name = "FILE", global = true, requires = "admin_cert")]
    admin_key: Option<PathBuf>,
    /// File holding the bearer token of [admin] token_file.
    #[arg(long, value_name = "FILE", global = true)]
    token_file: Option<PathBuf>,
}

impl AdminAuthArgs {
    /// `addr` with these credentials (unix sockets ignore them).
    pub fn apply(&self, addr: AdminAddr) -> anyhow::Result<AdminAddr> {
        let credentials = Credentials::from_flags(
            self.admin_ca.as_deref(),
            self.admin_cert.as_deref(),
            self.admin_key.as_deref(),
            self.token_file.as_deref(),
        )?;
        Ok(addr.with_credentials(credentials))
    }
}
