//! The `sshbridge` daemon as a child process: its config file, its log,
//! signals, and readiness by an actual CONNECT through it.

mod config;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use config::{
    AdminTcp, BridgeConfig, KonnectivityConfig, MigrationTuning, NodeEntry, TcpEgress,
};

use crate::client::Egress;

/// The `sshbridge` binary, built once per test run: `$SSHBRIDGE_BIN` when
/// set, else `cargo build -p sshbridge --bin sshbridge` next to this test.
pub fn bridge_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| build_bin().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn build_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SSHBRIDGE_BIN") {
        return Ok(PathBuf::from(bin));
    }
    // target/debug/deps/e2e-HASH -> target/debug/sshbridge
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no target dir")?
        .join("sshbridge");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "sshbridge", "--bin", "sshbridge"])
            .current_dir(workspace)
            .status()
            .context("running cargo build for the sshbridge binary")?;
        if !status.success() {
            bail!("cargo build -p sshbridge --bin sshbridge failed: {status}");
        }
    }
    if !bin.exists() {
        bail!(
            "{} not found; build it with cargo build -p sshbridge",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running `sshbridge run --config FILE`. Dropping it kills the process
/// (and prints its log when the test is failing).
pub struct Bridge {
    /// The config it was last given.
    pub config: BridgeConfig,
    /// Its Konnectivity sections, when started with them.
    pub konnectivity: Option<KonnectivityConfig>,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Bridge {
    /// Writes the config, starts the daemon and waits until a CONNECT to
    /// `ready_target` answers 200 (skip waiting with `None`).
    pub async fn start(config: BridgeConfig, ready_target: Option<&str>) -> anyhow::Result<Self> {
        Self::start_with(config, None, ready_target).await
    }

    /// [`Bridge::start`] with the Konnectivity sections of `konnectivity`.
    pub async fn start_with(
        config: BridgeConfig,
        konnectivity: Option<KonnectivityConfig>,
        ready_target: Option<&str>,
    ) -> anyhow::Result<Self> {
        let bin = bridge_bin()?;
        let path = config.write_with(konnectivity.as_ref())?;
        let log = config.dir.join("sshbridge.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let err = out.try_clone()?;
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,sshbridge=debug".into());
        let child = tokio::process::Command::new(&bin)
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut bridge = Bridge {
            config,
            konnectivity,
            child,
            log,
        };
        if let Some(target) = ready_target {
            bridge
                .wait_for_status(target, 200, Duration::from_secs(30))
                .await?;
        }
        Ok(bridge)
    }

    /// The unix-socket egress.
    pub fn egress(&self) -> Egress {
        Egress::Uds(self.config.uds.clone())
    }

    /// The mTLS TCP egress, with the client certificate from the config.
    pub fn egress_tcp(&self) -> Option<Egress> {
        let tcp = self.config.tcp.as_ref()?;
        Some(Egress::Tls {
            addr: tcp.listen,
            config: tcp.client.clone(),
        })
    }

    /// Polls a CONNECT to `target` until it answers `status` (bounded by
    /// `within`); fails with the last answer and the bridge log.
    pub async fn wait_for_status(
        &mut self,
        target: &str,
        status: u16,
        within: Duration,
    ) -> anyhow::Result<()> {
        let egress = self.egress();
        let mut last = String::from("no attempt");
        let poll = async {
            loop {
                if let Ok(Some(exit)) = self.child.try_wait() {
                    last = format!("the bridge exited with {exit}");
                    return false;
                }
                match egress.connect(target).await {
                    Ok(c) if c.status == status => return true,
                    Ok(c) => last = format!("{} {}", c.status, c.body.trim()),
                    Err(e) => last = format!("{e:#}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        match tokio::time::timeout(within, poll).await {
            Ok(true) => Ok(()),
            _ => bail!(
                "CONNECT {target} did not answer {status} within {within:?}; last: {last}\nbridge log:\n{}",
                self.log_tail(60)
            ),
        }
    }

    /// Writes a new config file (the daemon reads it on [`Bridge::sighup`]).
    pub fn rewrite_config(&mut self, config: BridgeConfig) -> anyhow::Result<()> {
        config.write_with(self.konnectivity.as_ref())?;
        self.config = config;
        Ok(())
    }

    /// Sends SIGHUP (reload).
    pub fn sighup(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGHUP)
    }

    /// Sends SIGTERM (drain and exit).
    pub fn sigterm(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGTERM)
    }

    fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let pid = self.child.id().context("the bridge already exited")?;
        kill(Pid::from_raw(pid as i32), sig).with_context(|| format!("kill({pid}, {sig})"))
    }

    /// SIGKILLs the daemon.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for the daemon to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => bail!(
                "the bridge did not exit within {within:?}\nlog:\n{}",
                self.log_tail(60)
            ),
        }
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::last_lines(&self.log(), lines)
    }

    /// Polls the log until it contains `needle` (bounded by `within`).
    pub async fn wait_for_log(&self, needle: &str, within: Duration) -> anyhow::Result<()> {
        let poll = async {
            while !self.log().contains(needle) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(within, poll).await.map_err(|_| {
            anyhow::anyhow!(
                "the bridge log never mentioned {needle:?}; log:\n{}",
                self.log_tail(60)
            )
        })
    }
}

tokio::task_local! {
    static LOGS: std::cell::RefCell<Vec<String>>;
}

/// Keeps `tail` (a child process's log) for [`capture_logs`], if a capture
/// is running.
pub(crate) fn keep_log(tail: String) {
    let _ = LOGS.try_with(|l| l.borrow_mut().push(tail));
}

/// Runs `body`, collecting the log tail of every [`Bridge`] dropped inside
/// it, so a test that fails with an error (not a panic) can still show
/// what the daemon said before its temp dir was removed.
pub async fn capture_logs<F: std::future::Future>(body: F) -> (F::Output, Vec<String>) {
    LOGS.scope(std::cell::RefCell::new(Vec::new()), async {
        let out = body.await;
        (out, LOGS.with(|l| l.take()))
    })
    .await
}

impl Drop for Bridge {
    fn drop(&mut self) {
        keep_log(self.log_tail(200));
        if std::thread::panicking() {
            eprintln!(
                "---- sshbridge log ({}) ----\n{}",
                self.log.display(),
                self.log_tail(200)
            );
        }
        let _ = self.child.start_kill();
    }
}
