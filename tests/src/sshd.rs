//! A real OpenSSH `sshd` per simulated node, listening on the node's own
//! 127.x address, with `PermitOpen` limited to that node's addresses so a
//! dial sent through the wrong node is refused where a test can see it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

use crate::hostkeys::{self, HostCa};
use crate::usercert::UserCaTrust;

/// Absolute path of the daemon; `scripts/test` installs it.
pub const SSHD: &str = "/usr/sbin/sshd";

/// What one node's sshd needs.
#[derive(Debug, Clone)]
pub struct SshdSpec {
    /// Node name (for messages and file names).
    pub name: String,
    /// Address sshd listens on.
    pub address: IpAddr,
    /// `PermitOpen` entries, e.g. `127.3.4.1:*`.
    pub permit_open: Vec<String>,
    /// Lines of the authorized_keys file.
    pub authorized_keys: Vec<String>,
}

/// A running sshd. Dropping it kills the daemon and its session processes.
pub struct SshdNode {
    name: String,
    addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    host_key_pub: PathBuf,
    host_key: String,
    /// The network namespace sshd runs in (`ip netns exec`), if any.
    netns: Option<String>,
    child: Option<Child>,
}

impl std::fmt::Debug for SshdNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshdNode")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish()
    }
}

impl SshdNode {
    /// Writes keys and config under `dir` (which must exist) and starts
    /// sshd. With `host_ca`, the host key is certified for the node's
    /// address and sshd presents the certificate.
    pub async fn start(
        spec: SshdSpec,
        dir: &Path,
        host_ca: Option<&HostCa>,
    ) -> anyhow::Result<Self> {
        Self::launch(spec, dir, host_ca, None, None).await
    }

    /// Like [`SshdNode::start`], but the node trusts user certificates
    /// from `trust`'s CAs (`TrustedUserCAKeys` + `AuthorizedPrincipalsFile`)
    /// and has no authorized_keys at all.
    pub async fn start_trusting(
        spec: SshdSpec,
        dir: &Path,
        host_ca: Option<&HostCa>,
        trust: &UserCaTrust,
    ) -> anyhow::Result<Self> {
        Self::launch(spec, dir, host_ca, None, Some(trust)).await
    }

    /// [`SshdNode::start`] inside the network namespace `netns`, listening
    /// on `spec.address:port` (the namespace is the node's alone, so a
    /// fixed port is free).
    pub async fn start_in_netns(
        spec: SshdSpec,
        dir: &Path,
        host_ca: Option<&HostCa>,
        netns: &str,
        port: u16,
    ) -> anyhow::Result<Self> {
        Self::launch(spec, dir, host_ca, Some((netns.to_string(), port)), None).await
    }

    async fn launch(
        spec: SshdSpec,
        dir: &Path,
        host_ca: Option<&HostCa>,
        netns: Option<(String, u16)>,
        trust: Option<&UserCaTrust>,
    ) -> anyhow::Result<Self> {
        ensure_privsep_dir()?;
        let host_key_path = dir.join("host_ed25519");
        let host_key = hostkeys::generate_ed25519(&host_key_path, &spec.name)?;
        let host_key_pub = host_key_path.with_extension("pub");
        let authorized = dir.join("authorized_keys");
        std::fs::write(&authorized, spec.authorized_keys.join("\n") + "\n")?;
        let auth_lines = match trust {
            Some(t) => t.sshd_lines(dir)?,
            None => format!("AuthorizedKeysFile {}\n", authorized.display()),
        };
        let log = dir.join("sshd.log");
        let mut last_err = None;
        for _ in 0..5 {
            let port = match &netns {
                Some((_, port)) => *port,
                None => crate::net::free_port(spec.address)?,
            };
            let addr = SocketAddr::new(spec.address, port);
            let mut text = format!(
                "ListenAddress {addr}\nHostKey {}\n",
                host_key_path.display()
            );
            if let Some(ca) = host_ca {
                let principals = [spec.address.to_string(), spec.name.clone()];
                let cert = ca.sign_host(&host_key_pub, &principals)?;
                text.push_str(&format!("HostCertificate {}\n", cert.display()));
            }
            text.push_str(&format!(
                "{auth_lines}PidFile none\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
                 AllowTcpForwarding yes\nPermitOpen {}\nX11Forwarding no\n\
                 AllowAgentForwarding no\nLogLevel VERBOSE\nMaxStartups 100\n",
                if spec.permit_open.is_empty() {
                    "none".to_string()
                } else {
                    spec.permit_open.join(" ")
                },
            ));
            let config = dir.join("sshd_config");
            std::fs::write(&config, text)?;
            let mut node = SshdNode {
                name: spec.name.clone(),
                addr,
                config,
                log: log.clone(),
                host_key_pub: host_key_pub.clone(),
                host_key: host_key.clone(),
                netns: netns.as_ref().map(|(ns, _)| ns.clone()),
                child: None,
            };
            match node.spawn_and_wait().await {
                Ok(()) => return Ok(node),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("sshd never started")))
    }

    /// Node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where sshd listens (`ssh_address` of the node).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ssh-ed25519 AAAA...` host public key, for known_hosts.
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// The host public key file (what a host CA signs).
    pub fn host_key_pub_path(&self) -> &Path {
        &self.host_key_pub
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILLs sshd and every session process it forked: established
    /// tunnels die as if the node had crashed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_tree(child.id() as i32, Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGSTOPs sshd and its session processes: the node stops answering
    /// without closing anything (TCP stays up, nothing is read).
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            signal_tree(child.id() as i32, Signal::SIGSTOP);
        }
    }

    /// Undoes [`SshdNode::freeze`].
    pub fn thaw(&self) {
        if let Some(child) = &self.child {
            signal_tree(child.id() as i32, Signal::SIGCONT);
        }
    }

    /// Starts sshd again on the same address and port after [`SshdNode::kill`].
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn_and_wait().await
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, SSHD]);
                c
            }
            None => Command::new(SSHD),
        };
        let mut child = command
            .arg("-D")
            .arg("-e")
            .arg("-E")
            .arg(&self.log)
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("starting {SSHD} (run scripts/test to install openssh-server)")
            })?;
        let ready = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "sshd for {} on {} exited with {status}",
                        self.name,
                        self.addr
                    );
                }
                if banner(self.addr).await {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let result = match ready {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!(
                "sshd for {} on {} sent no banner in 10s",
                self.name,
                self.addr
            )),
        };
        match result {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(e) => {
                signal_tree(child.id() as i32, Signal::SIGKILL);
                let _ = child.wait();
                Err(e.context(format!("sshd log:\n{}", self.log())))
            }
        }
    }
}

impl Drop for SshdNode {
    fn drop(&mut self) {
        self.thaw();
        self.kill();
    }
}

/// Whether an SSH banner can be read from `addr` right now.
async fn banner(addr: SocketAddr) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"SSH-2.0-"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(true))
    )
}

/// `/run/sshd` is sshd's privilege-separation directory; it must exist
/// when sshd starts as root.
fn ensure_privsep_dir() -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
    }
    Ok(())
}

/// Sends `sig` to `pid` and all its descendants (sshd forks one process
/// per connection, each in its own session, so a process group would not
/// reach them).
fn signal_tree(pid: i32, sig: Signal) {
    let mut pids = vec![pid];
    let mut i = 0;
    let table = process_table();
    while i < pids.len() {
        let parent = pids[i];
        pids.extend(
            table
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    for p in pids {
        // A pid we collected; worst case ESRCH.
        let _ = kill(Pid::from_raw(p), sig);
    }
}

/// `(pid, ppid)` of every process, from /proc.
fn process_table() -> Vec<(i32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Field 4, after the parenthesised command (which may hold spaces).
            let rest = &stat[stat.rfind(')')? + 2..];
            let ppid = rest.split(' ').nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}
