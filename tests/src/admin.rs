//! The bridge's admin API as an operator meets it: plain HTTP GETs on its
//! unix socket, the `/report` document, and the `sshbridge report` CLI run
//! as a child process. Every call is bounded.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use sshbridge::admin_client::{fetch_report, AdminAddr};
use sshbridge::report::{PathState, Report};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bridge::{bridge_bin, Bridge};

/// Bound on one admin request.
const REQUEST: Duration = Duration::from_secs(10);
/// Bound on one CLI run.
const CLI: Duration = Duration::from_secs(30);
/// Pause between two polls of the admin API.
const POLL: Duration = Duration::from_millis(200);

/// An admin API answer.
#[derive(Debug, Clone)]
pub struct AdminAnswer {
    /// HTTP status.
    pub status: u16,
    /// The whole body.
    pub body: String,
}

impl AdminAnswer {
    /// Parses a whole HTTP/1.1 answer (head and body) as read off the wire.
    pub fn parse(raw: &[u8]) -> anyhow::Result<AdminAnswer> {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .with_context(|| format!("no HTTP head in {text:?}"))?;
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("bad status line in {head:?}"))?;
        Ok(AdminAnswer {
            status,
            body: body.to_string(),
        })
    }
}

impl Bridge {
    /// `[admin] listen` as the report client takes it.
    pub fn admin_addr(&self) -> AdminAddr {
        AdminAddr::Unix(self.config.admin_socket())
    }

    /// `unix:PATH`, as given to `sshbridge report --admin`.
    pub fn admin_arg(&self) -> String {
        self.admin_addr().to_string()
    }

    /// `GET path` on the admin socket with `Connection: close`; any status,
    /// the whole body.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<AdminAnswer> {
        let socket = self.config.admin_socket();
        let exchange = async {
            let mut s = tokio::net::UnixStream::connect(&socket)
                .await
                .with_context(|| format!("connect to admin socket {}", socket.display()))?;
            let req =
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).await?;
            AdminAnswer::parse(&raw)
        };
        tokio::time::timeout(REQUEST, exchange)
            .await
            .with_context(|| format!("admin GET {path} timed out"))?
    }

    /// Polls `GET path` until it answers `status` (bounded by `within`).
    pub async fn wait_for_admin(
        &self,
        path: &str,
        status: u16,
        within: Duration,
    ) -> anyhow::Result<AdminAnswer> {
        let mut last = String::from("no answer yet");
        let poll = async {
            loop {
                match self.admin_get(path).await {
                    Ok(a) if a.status == status => return a,
                    Ok(a) => last = format!("{} {}", a.status, a.body.trim()),
                    Err(e) => last = format!("{e:#}"),
                }
                tokio::time::sleep(POLL).await;
            }
        };
        match tokio::time::timeout(within, poll).await {
            Ok(answer) => Ok(answer),
            Err(_) => bail!(
                "admin GET {path} did not answer {status} within {within:?}; last: {last}\n\
                 bridge log:\n{}",
                self.log_tail(40)
            ),
        }
    }

    /// `GET /report`, parsed with the library's client.
    pub async fn report(&self) -> anyhow::Result<Report> {
        Ok(fetch_report(&self.admin_addr(), REQUEST).await?)
    }

    /// Polls `/report` until `ok` holds (bounded by `within`); the error
    /// names `what` and shows every node's ssh path of the last report.
    pub async fn wait_for_report(
        &self,
        what: &str,
        within: Duration,
        ok: impl Fn(&Report) -> bool,
    ) -> anyhow::Result<Report> {
        let mut last = String::from("no report yet");
        let poll = async {
            loop {
                match self.report().await {
                    Ok(r) if ok(&r) => return r,
                    Ok(r) => last = summary(&r),
                    Err(e) => last = format!("{e:#}"),
                }
                tokio::time::sleep(POLL).await;
            }
        };
        match tokio::time::timeout(within, poll).await {
            Ok(report) => Ok(report),
            Err(_) => bail!(
                "/report never showed {what} within {within:?}; last:\n{last}\nbridge log:\n{}",
                self.log_tail(40)
            ),
        }
    }
}

/// The value of the sample `name{labels}` in a Prometheus text `body`
/// (labels in the order the bridge writes them); `None` when absent.
pub fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let series = format!("{name}{{{}}} ", labels.join(","));
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

impl Bridge {
    /// `GET /metrics`; fails on any status but 200.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let answer = self.admin_get("/metrics").await?;
        if answer.status != 200 {
            bail!("GET /metrics answered {}: {}", answer.status, answer.body);
        }
        Ok(answer.body)
    }
}

/// The ssh path state of `node` in `report` (`None` if the node is absent).
pub fn ssh_state(report: &Report, node: &str) -> Option<PathState> {
    report
        .nodes
        .iter()
        .find(|n| n.name == node)
        .map(|n| n.paths.ssh.state)
}

/// The ssh path's `last_error` of `node`, empty when there is none.
pub fn ssh_last_error(report: &Report, node: &str) -> String {
    report
        .nodes
        .iter()
        .find(|n| n.name == node)
        .and_then(|n| n.paths.ssh.last_error.clone())
        .unwrap_or_default()
}

/// One line per node: name, route, each path's state and last error.
pub fn summary(report: &Report) -> String {
    report
        .nodes
        .iter()
        .map(|n| {
            let k = n.paths.konnectivity.as_ref();
            format!(
                "  {} route={} ssh={:?} last_error={:?} konnectivity={:?} last_error={:?}",
                n.name,
                n.route.as_str(),
                n.paths.ssh.state,
                n.paths.ssh.last_error,
                k.map(|p| p.state),
                k.and_then(|p| p.last_error.as_deref())
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a finished `sshbridge` CLI run printed.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs the `sshbridge` binary with `args` (bounded) and collects its output.
pub async fn sshbridge_cli<I, S>(args: I) -> anyhow::Result<CliOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin: PathBuf = bridge_bin()?;
    let child = tokio::process::Command::new(&bin)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(CLI, child)
        .await
        .context("the sshbridge CLI did not finish within 30s")?
        .with_context(|| format!("running {}", bin.display()))?;
    Ok(CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
