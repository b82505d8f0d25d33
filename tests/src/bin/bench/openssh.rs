//! OpenSSH for the side-by-side runs: an `sshd` restricted to one cipher
//! (so whoever connects, the bridge or `ssh`, must use it) and an
//! `ssh -N -L` forward to the same sshd, the baseline operators know.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use sshbridge_tests::{hostkeys, net};
use tokio::io::AsyncReadExt;

/// An sshd that offers exactly one cipher. Dropping it kills it.
pub struct Sshd {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `ssh-ed25519 AAAA...`.
    pub host_key: String,
    /// The only cipher it offers.
    pub cipher: String,
    log: PathBuf,
    child: Child,
}

impl Sshd {
    /// The listening sshd's pid; its per-connection processes are below it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts sshd on `ip` (free port) under `dir`, allowing `authorized`.
    pub async fn start(
        ip: IpAddr,
        dir: &Path,
        cipher: &str,
        authorized: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        if unsafe { libc::geteuid() } == 0 {
            // sshd's privilege-separation directory.
            std::fs::create_dir_all("/run/sshd")?;
        }
        let key = dir.join("host_ed25519");
        let host_key = hostkeys::generate_ed25519(&key, "bench-node")?;
        let auth = dir.join("authorized_keys");
        std::fs::write(&auth, format!("{authorized}\n"))?;
        let log = dir.join("sshd.log");
        let mut last = None;
        for _ in 0..5 {
            let addr = SocketAddr::new(ip, net::free_port(ip)?);
            let config = dir.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "ListenAddress {addr}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\n\
                     StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                     PermitRootLogin prohibit-password\nAllowTcpForwarding yes\nPermitOpen any\n\
                     X11Forwarding no\nAllowAgentForwarding no\nLogLevel DEBUG1\n\
                     MaxStartups 200\nCompression no\nCiphers {cipher}\n",
                    key.display(),
                    auth.display()
                ),
            )?;
            let child = Command::new(sshbridge_tests::sshd::SSHD)
                .args(["-D", "-e", "-E"])
                .arg(&log)
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting /usr/sbin/sshd (scripts/bench installs openssh-server)")?;
            let mut sshd = Sshd {
                addr,
                host_key: host_key.clone(),
                cipher: cipher.into(),
                log: log.clone(),
                child,
            };
            match sshd.wait_banner().await {
                Ok(()) => return Ok(sshd),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("sshd never started")))
    }

    async fn wait_banner(&mut self) -> anyhow::Result<()> {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait()? {
                bail!("sshd on {} exited with {status}: {}", self.addr, self.log());
            }
            let probe = async {
                let mut s = tokio::net::TcpStream::connect(self.addr).await.ok()?;
                let mut buf = [0u8; 8];
                s.read_exact(&mut buf).await.ok()?;
                Some(&buf == b"SSH-2.0-")
            };
            if let Ok(Some(true)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("sshd on {} sent no banner in 5 s", self.addr)
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ciphers sshd logged as negotiated (`kex: client->server cipher: X`).
    pub fn negotiated(&self) -> Vec<String> {
        let mut seen: Vec<String> = self
            .log()
            .lines()
            .filter_map(|l| l.split("client->server cipher: ").nth(1))
            .filter_map(|r| r.split_whitespace().next())
            .map(String::from)
            .collect();
        seen.sort();
        seen.dedup();
        seen
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ssh -N -L` forwarding a local port to `target` through `sshd`.
/// Dropping it kills the client (and so its session on the sshd side).
pub struct Forward {
    /// The local end of the forward.
    pub local: SocketAddr,
    child: Child,
}

impl Forward {
    /// Starts the forward and waits until its local port accepts.
    pub async fn start(
        sshd: &Sshd,
        identity: &Path,
        known_hosts: &Path,
        user: &str,
        target: SocketAddr,
    ) -> anyhow::Result<Self> {
        let ip = net::host(net::block(), 1);
        let mut last = String::new();
        for _ in 0..5 {
            let local = SocketAddr::new(ip, net::free_port(ip)?);
            let mut child = Command::new("ssh")
                .args(["-N", "-F", "/dev/null", "-i"])
                .arg(identity)
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
                .args([
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "Compression=no",
                    "-o",
                    "ExitOnForwardFailure=yes",
                ])
                .arg("-o")
                .arg(format!("Ciphers={}", sshd.cipher))
                .arg("-p")
                .arg(sshd.addr.port().to_string())
                .arg("-L")
                .arg(format!("{local}:{target}"))
                .arg("-l")
                .arg(user)
                .arg(sshd.addr.ip().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting ssh (scripts/bench installs openssh-client)")?;
            for _ in 0..200 {
                if let Some(status) = child.try_wait()? {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    last = format!("ssh -L exited with {status}: {}", err.trim());
                    break;
                }
                if tokio::net::TcpStream::connect(local).await.is_ok() {
                    return Ok(Forward { local, child });
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        bail!("ssh -N -L to {} never came up: {last}", sshd.addr)
    }
}

impl Forward {
    /// The `ssh` client's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `OpenSSH_x.y...` from `ssh -V`.
pub fn version() -> String {
    Command::new("ssh")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
