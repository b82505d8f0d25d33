//! Nodes whose sshd runs with exactly what `sshbridge manifests node-sshd`
//! printed: a base config (listen address, host key, authorized_keys file,
//! no PAM, no passwords) followed by the generated text, checked with
//! `sshd -t` before it starts. Each node also has a TLS kubelet stand-in;
//! the bridge config naming them all is written for the CLI to read.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use sshbridge_sim::kubelet::Kubelet;
use sshbridge_sim::pki::Pki;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bridge::{BridgeConfig, NodeEntry};
use crate::hostkeys::{self, ClientKey, KnownHostsStyle};
use crate::sshd::SSHD;
use crate::{net, sshbridge_cli};

/// One node: addresses and its kubelet; sshd is started separately from
/// the generated text.
pub struct LabNode {
    /// Node name.
    pub name: String,
    /// Node IP (kubelet and sshd).
    pub address: IpAddr,
    /// Where sshd will listen.
    pub ssh_addr: SocketAddr,
    /// The kubelet stand-in on `address`.
    pub kubelet: Kubelet,
}

/// Nodes, the bridge's key and config, and the cluster CA.
pub struct Lab {
    /// Holds every file.
    pub dir: tempfile::TempDir,
    /// The bridge's SSH identity.
    pub client_key: ClientKey,
    /// The cluster CA (kubelet certificates), as `kubelet_ca` names it.
    pub ca_path: PathBuf,
    /// The kubelet CA.
    pub pki: Pki,
    /// The nodes.
    pub nodes: Vec<LabNode>,
    /// The kubelet port of every node.
    pub kubelet_port: u16,
    shutdown: CancellationToken,
}

impl Lab {
    /// `names.len()` nodes; the nodes listed in `foreign_ca` get kubelet
    /// certificates from another CA than `kubelet_ca`.
    pub async fn new(names: &[&str], foreign_ca: &[&str]) -> anyhow::Result<Lab> {
        crate::init_tracing();
        let dir = tempfile::Builder::new()
            .prefix("sshbridge-nodesshd")
            .tempdir()?;
        let pki = Pki::new("sshbridge-e2e-ca")?;
        let ca_path = pki.write_ca(dir.path())?;
        let client_key = ClientKey::generate(dir.path(), "id_ed25519")?;
        let shutdown = CancellationToken::new();
        let mut nodes = Vec::new();
        let mut kubelet_port = 0;
        for name in names {
            let address = net::host(net::block(), 1);
            let listener = TcpListener::bind(SocketAddr::new(address, kubelet_port))
                .await
                .with_context(|| format!("binding a kubelet on {address}"))?;
            kubelet_port = listener.local_addr()?.port();
            let tls = if foreign_ca.contains(name) {
                let other = Pki::new("some-other-ca")?;
                other.server_config(&other.issue_server(&[address], &[name])?)?
            } else {
                pki.server_config(&pki.issue_server(&[address], &[name])?)?
            };
            let kubelet = Kubelet::start(listener, name.to_string(), tls, shutdown.child_token())?;
            let ssh_addr = SocketAddr::new(address, net::free_port(address)?);
            nodes.push(LabNode {
                name: name.to_string(),
                address,
                ssh_addr,
                kubelet,
            });
        }
        Ok(Lab {
            dir,
            client_key,
            ca_path,
            pki,
            nodes,
            kubelet_port,
            shutdown,
        })
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> &LabNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("no such node")
    }

    /// The bridge config for every node (known_hosts at
    /// [`Lab::known_hosts`], written by [`Lab::write_known_hosts`]).
    pub fn bridge_config(&self) -> anyhow::Result<BridgeConfig> {
        let bridge_dir = self.dir.path().join("bridge");
        std::fs::create_dir_all(&bridge_dir)?;
        Ok(BridgeConfig {
            uds: bridge_dir.join("egress.sock"),
            dir: bridge_dir,
            tcp: None,
            admin_tcp: None,
            dial_timeout: "3s".into(),
            user: crate::cluster::current_user()?,
            identity: self.client_key.private.clone(),
            known_hosts: self.known_hosts(),
            connect_timeout: "3s".into(),
            keepalive_interval: "1s".into(),
            keepalive_max: 3,
            backoff: ("100ms".into(), "500ms".into()),
            max_stream_buffer: "4MiB".into(),
            health_interval: "1s".into(),
            kubelet_port: self.kubelet_port,
            kubelet_ca: Some(self.ca_path.clone()),
            down_after: 2,
            up_after: 1,
            extra_bridge_lines: Vec::new(),
            migration: None,
            extra_ssh_lines: Vec::new(),
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeEntry {
                    name: n.name.clone(),
                    address: n.address,
                    ssh_address: n.ssh_addr,
                    pod_cidrs: Vec::new(),
                })
                .collect(),
        })
    }

    /// The known_hosts file of [`Lab::bridge_config`].
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// Writes known_hosts with one `(sshd address, host key)` per entry.
    pub fn write_known_hosts(&self, entries: &[(SocketAddr, String)]) -> anyhow::Result<()> {
        hostkeys::write_known_hosts(&self.known_hosts(), entries, KnownHostsStyle::Plain, None)
    }

    /// Runs `sshbridge manifests node-sshd --config CONFIG ARGS...` and
    /// returns what it printed.
    pub async fn generate(&self, config: &Path, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec![
            "manifests".to_string(),
            "node-sshd".into(),
            "--config".into(),
            config.display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let out = sshbridge_cli(&all).await?;
        if out.code != Some(0) {
            bail!("manifests node-sshd {args:?} failed: {}", out.stderr);
        }
        Ok(out.stdout)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An sshd running the generated configuration. Dropping it kills sshd
/// and its sessions.
pub struct GeneratedSshd {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `ssh-ed25519 AAAA...` host key.
    pub host_key: String,
    /// The whole sshd_config it runs.
    pub config: PathBuf,
    log: PathBuf,
    child: Child,
}

impl GeneratedSshd {
    /// Writes the base config plus `generated` (appended verbatim, so its
    /// `Match` block ends the file) and `authorized_keys`, checks it with
    /// `sshd -t`, and starts sshd on `addr`.
    pub async fn start(
        dir: &Path,
        addr: SocketAddr,
        generated: &str,
        authorized_keys: &[String],
    ) -> anyhow::Result<GeneratedSshd> {
        std::fs::create_dir_all(dir)?;
        if nix::unistd::geteuid().is_root() {
            std::fs::create_dir_all("/run/sshd")?;
        }
        let host_key_path = dir.join("host_ed25519");
        let host_key = hostkeys::generate_ed25519(&host_key_path, "node")?;
        let authorized = dir.join("authorized_keys");
        std::fs::write(&authorized, authorized_keys.join("\n") + "\n")?;
        let config = dir.join("sshd_config");
        let log = dir.join("sshd.log");
        let text = format!(
            "ListenAddress {addr}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nLogLevel DEBUG1\nMaxStartups 100\n\
             # ---- generated by sshbridge manifests node-sshd ----\n{generated}",
            host_key_path.display(),
            authorized.display(),
        );
        std::fs::write(&config, text)?;
        let check = Command::new(SSHD)
            .arg("-t")
            .arg("-f")
            .arg(&config)
            .output()?;
        if !check.status.success() {
            bail!(
                "sshd -t refused the generated configuration {}: {}",
                config.display(),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-E"])
            .arg(&log)
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting sshd (scripts/test installs openssh-server)")?;
        let mut node = GeneratedSshd {
            addr,
            host_key,
            config,
            log,
            child,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = node.child.try_wait()? {
                bail!("sshd on {addr} exited with {status}: {}", node.log());
            }
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                    .await
            {
                return Ok(node);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("sshd on {addr} did not listen within 10s: {}", node.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// sshd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GeneratedSshd {
    fn drop(&mut self) {
        for pid in descendants(self.child.id() as i32) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pid`'s descendants (sshd forks per connection, each in its own session).
pub fn descendants(pid: i32) -> Vec<i32> {
    let table: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| {
                let p: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
                let rest = &stat[stat.rfind(')')? + 2..];
                Some((p, rest.split(' ').nth(1)?.parse().ok()?))
            })
            .collect()
        })
        .unwrap_or_default();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            table
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out.remove(0);
    out
}

/// The command line (NUL-separated words joined by spaces) and the
/// environment of `pid`.
pub fn process_info(pid: i32) -> Option<(String, Vec<String>)> {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let words = |b: &[u8]| -> Vec<String> {
        b.split(|c| *c == 0)
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect()
    };
    Some((words(&cmd).join(" "), words(&env)))
}
