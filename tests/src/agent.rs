//! `sshbridge agent` as a child process: one Konnectivity agent serving one
//! node, with its own log file. It can be killed (-9), restarted with the
//! same flags, or drained with SIGTERM.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bridge::{bridge_bin, keep_log, KonnectivityConfig};

/// How an agent is started: the flags of `sshbridge agent`.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// `--server`
    pub server: String,
    /// `--ca-cert`
    pub ca_cert: PathBuf,
    /// `--cert` and `--key`; `None` to connect without a client certificate.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// `--agent-id`
    pub agent_id: String,
    /// `--identifiers`, e.g. `host=node-0&ipv4=127.1.0.1`.
    pub identifiers: String,
    /// `--service-account-token-path`: a bearer token file, for a bridge
    /// with `agent_auth = "tokenreview"`.
    pub token_file: Option<PathBuf>,
    /// Where its log file goes.
    pub dir: PathBuf,
    /// More flags, after the kit's (e.g. `--metrics-listen ADDR`).
    pub extra_args: Vec<String>,
}

impl AgentSpec {
    /// An agent for the node `name` at `address` of a bridge configured with
    /// `k`, identified by both (`host=` and `ipv4=`), with the node's own
    /// client certificate (the shared one when `k` has none for it); its
    /// log goes to `dir`.
    pub fn for_node(
        k: &KonnectivityConfig,
        name: &str,
        address: std::net::IpAddr,
        dir: PathBuf,
    ) -> Self {
        AgentSpec {
            server: k.agent_listen.to_string(),
            ca_cert: k.agent_ca.clone(),
            identity: Some(
                k.agent_identities
                    .get(name)
                    .unwrap_or(&k.agent_identity)
                    .clone(),
            ),
            agent_id: format!("agent-{name}"),
            identifiers: format!("host={name}&ipv4={address}"),
            token_file: None,
            dir,
            extra_args: Vec::new(),
        }
    }
}

/// A running `sshbridge agent`. Dropping it kills the process (and prints
/// its log when the test is failing).
pub struct Agent {
    /// The flags it runs with.
    pub spec: AgentSpec,
    /// The network namespace it runs in (`ip netns exec`), if any.
    netns: Option<String>,
    child: Option<tokio::process::Child>,
    log: PathBuf,
}

impl Agent {
    /// Starts the agent. It is not connected yet: wait for that on the
    /// bridge (`Bridge::wait_for_konnectivity`).
    pub async fn start(spec: AgentSpec) -> anyhow::Result<Self> {
        Self::launch(spec, None)
    }

    /// [`Agent::start`] inside the network namespace `netns`.
    pub async fn start_in_netns(spec: AgentSpec, netns: &str) -> anyhow::Result<Self> {
        Self::launch(spec, Some(netns.to_string()))
    }

    fn launch(spec: AgentSpec, netns: Option<String>) -> anyhow::Result<Self> {
        let log = spec.dir.join(format!("{}.log", spec.agent_id));
        let mut agent = Agent {
            spec,
            netns,
            child: None,
            log,
        };
        agent.spawn()?;
        Ok(agent)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = bridge_bin()?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let err = out.try_clone()?;
        let s = &self.spec;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => tokio::process::Command::new(&bin),
        };
        cmd.arg("agent")
            .args(["--server", &s.server])
            .arg("--ca-cert")
            .arg(&s.ca_cert)
            .args(["--agent-id", &s.agent_id])
            .args(["--identifiers", &s.identifiers])
            // Reconnect fast: tests restart bridges and agents.
            .args(["--sync-interval", "100ms", "--sync-interval-cap", "500ms"])
            .args(["--dial-timeout", "2s"]);
        if let Some((cert, key)) = &s.identity {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some(token) = &s.token_file {
            cmd.arg("--service-account-token-path").arg(token);
        }
        cmd.args(&s.extra_args);
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,sshbridge=debug".into());
        let child = cmd
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} agent", bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILLs the agent and waits for it to be gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .context("a killed agent did not exit within 10s")??;
        }
        Ok(())
    }

    /// Starts the agent again with the same flags (killing it first if it
    /// still runs).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.spawn()
    }

    /// Sends SIGTERM: the agent sends DRAIN and exits once its connections
    /// are done.
    pub fn sigterm(&self) -> anyhow::Result<()> {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| c.id())
            .context("the agent is not running")?;
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
            .with_context(|| format!("kill({pid}, SIGTERM)"))
    }

    /// Waits for the agent to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().context("the agent is not running")?;
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => bail!(
                "agent {} did not exit within {within:?}; log:\n{}",
                self.spec.agent_id,
                self.log_tail(40)
            ),
        }
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The whole log so far (every run of this agent).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::last_lines(&self.log(), lines)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let tail = format!(
            "(agent {}, {})\n{}",
            self.spec.agent_id,
            self.log.display(),
            self.log_tail(60)
        );
        if std::thread::panicking() {
            eprintln!("---- sshbridge agent log ----\n{tail}");
        }
        keep_log(tail);
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
