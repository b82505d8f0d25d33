//! Upstream Konnectivity programs as child processes: `proxy-server`,
//! `proxy-agent` and `proxy-test-client` of apiserver-network-proxy, each
//! with its own log file, all bound to loopback only.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bridge::keep_log;

/// Where the upstream binaries are: `$ANP_BIN`, or `None` when unset.
pub fn anp_bin() -> Option<PathBuf> {
    std::env::var_os("ANP_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// One upstream program running as a child. Dropping it kills the process
/// (and prints its log when the test is failing).
pub struct Upstream {
    /// Its name in messages (`proxy-server grpc`, `proxy-agent node-0`).
    pub name: String,
    bin: PathBuf,
    args: Vec<String>,
    child: Option<tokio::process::Child>,
    log: PathBuf,
}

impl Upstream {
    /// Starts `bin` with `args`, its output appended to `log`.
    pub fn start(
        name: &str,
        bin: PathBuf,
        args: Vec<String>,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let mut p = Upstream {
            name: name.to_string(),
            bin,
            args,
            child: None,
            log,
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let err = out.try_clone()?;
        let child = tokio::process::Command::new(&self.bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        kill(Pid::from_raw(pid as i32), sig).with_context(|| format!("kill({pid}, {sig})"))
    }

    /// SIGKILLs the process and waits for it to be gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .with_context(|| format!("killed {} did not exit within 10s", self.name))??;
        }
        Ok(())
    }

    /// Starts the program again with the same flags (it must have exited or
    /// been killed).
    pub fn respawn(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("{} still runs; kill it first", self.name);
        }
        self.spawn()
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().context("not running")?;
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => {
                self.child = None;
                Ok(status?)
            }
            Err(_) => bail!(
                "{} did not exit within {within:?}; log:\n{}",
                self.name,
                self.log_tail(40)
            ),
        }
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The whole log (every run).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::last_lines(&self.log(), lines)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let tail = format!(
            "({}, {})\n{}",
            self.name,
            self.log.display(),
            self.log_tail(60)
        );
        if std::thread::panicking() {
            eprintln!("---- upstream log ----\n{tail}");
        }
        keep_log(tail);
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// What `proxy-test-client` did: its exit status and its stderr (klog).
#[derive(Debug)]
pub struct TestClientRun {
    /// Whether it exited 0.
    pub success: bool,
    /// Its stderr; at `-v=4` the response body follows `HTML Response:`.
    pub stderr: String,
}

/// Runs `proxy-test-client --mode=MODE` against the unix socket `uds`:
/// one `GET http://host:port/path` through the proxy, bounded by 60 s.
pub async fn test_client(
    anp: &Path,
    mode: &str,
    uds: &Path,
    target: std::net::SocketAddr,
    path: &str,
) -> anyhow::Result<TestClientRun> {
    let out = tokio::process::Command::new(anp.join("proxy-test-client"))
        .arg(format!("--mode={mode}"))
        .arg(format!("--proxy-uds={}", uds.display()))
        .args(["--proxy-host=", "--proxy-port=0", "--request-proto=http"])
        .arg(format!("--request-host={}", target.ip()))
        .arg(format!("--request-port={}", target.port()))
        .arg(format!("--request-path={path}"))
        .arg("-v=4")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .context("proxy-test-client did not finish within 60s")??;
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    stderr.push_str(&String::from_utf8_lossy(&out.stdout));
    Ok(TestClientRun {
        success: out.status.success(),
        stderr,
    })
}
