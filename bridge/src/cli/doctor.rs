//! `sshbridge doctor [NODE...]`: checks each node from the bridge's point
//! of view, one line per check, and names the fix of each failure. The
//! SSH and kubelet checks need no running daemon (they use the config's
//! identity and known_hosts directly); the Konnectivity check asks the
//! running bridge and is skipped when there is none.

mod kubelet;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;
use sshbridge::admin_client::{fetch_report, AdminAddr};
use sshbridge::ssh::diagnose::{diagnose, Finding, Verdict};
use sshbridge::ssh::{SshContext, SshSetupError};
use sshbridge_config::{AgentIdentity, Config, Node, Route};
use sshbridge_report::Report;

/// How long the running bridge has to answer `GET /report`.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// `sshbridge doctor [NODE...] [--config FILE] [-o table|json]`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Nodes to check (default: every node of the config).
    #[arg(value_name = "NODE")]
    nodes: Vec<String>,
    /// Configuration file of the bridge.
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        default_value = "/etc/sshbridge/sshbridge.toml"
    )]
    config: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Admin API of the running bridge (for the Konnectivity check).
    /// Default: `[admin].listen` of --config.
    #[arg(long, value_name = "ADDR")]
    admin: Option<AdminAddr>,
    #[command(flatten)]
    auth: super::admin_auth::AdminAuthArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// A table per node.
    Table,
    /// JSON for scripts.
    Json,
}

/// The checks of one node.
#[derive(Debug, Serialize)]
struct NodeResult {
    name: String,
    address: String,
    ssh_address: String,
    checks: Vec<Check>,
}

/// One line of the output.
#[derive(Debug, Serialize)]
struct Check {
    check: &'static str,
    result: &'static str,
    message: String,
}

impl From<Finding> for Check {
    fn from(f: Finding) -> Self {
        Check {
            check: f.check,
            result: word(f.verdict),
            message: f.message,
        }
    }
}

fn word(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::Warn => "warn",
        Verdict::Fail => "fail",
        Verdict::Skip => "skip",
    }
}

/// Runs the checks; exit 0 when all pass, 1 when one failed, 3 with
/// warnings only (as `report diff` exits 3 on a regression).
pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let path = std::path::absolute(&args.config).unwrap_or(args.config.clone());
    let cfg = sshbridge_config::load(&path).with_context(|| {
        format!(
            "doctor checks the nodes of {}; pass --config FILE",
            path.display()
        )
    })?;
    let mut nodes: Vec<&Node> = Vec::new();
    for name in &args.nodes {
        let node = cfg
            .nodes
            .iter()
            .find(|n| &n.name == name)
            .with_context(|| format!("{}: there is no [[node]] named {name:?}", path.display()))?;
        nodes.push(node);
    }
    if args.nodes.is_empty() {
        nodes = cfg.nodes.iter().collect();
    }
    // An unusable certificate is a finding of every node, not the end of
    // the run: the other checks still run without it.
    let (ctx, certificate_error) = match SshContext::load(&cfg.ssh) {
        Ok(ctx) => (ctx, None),
        Err(SshSetupError::Certificate(e)) => {
            let mut ssh = cfg.ssh.clone();
            ssh.certificate = None;
            (SshContext::load(&ssh)?, Some(e.to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    let report = bridge_report(&cfg, &args).await;
    let checks = nodes
        .iter()
        .map(|n| check_node(&cfg, &ctx, n, certificate_error.as_deref(), &report));
    let results = futures::future::join_all(checks).await;
    match args.output {
        Output::Json => println!("{}", render::json(&results)),
        Output::Table => print!("{}", render::table(&results)),
    }
    let all = || results.iter().flat_map(|n| n.checks.iter());
    Ok(if all().any(|c| c.result == "fail") {
        ExitCode::from(1)
    } else if all().any(|c| c.result == "warn") {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// The running bridge's report, or why there is none.
async fn bridge_report(cfg: &Config, args: &DoctorArgs) -> Result<Report, String> {
    cfg.konnectivity.as_ref().ok_or_else(String::new)?;
    let addr = args
        .admin
        .clone()
        .unwrap_or_else(|| AdminAddr::from(&cfg.admin.listen));
    let addr = args.auth.apply(addr).map_err(|e| e.to_string())?;
    fetch_report(&addr, ADMIN_TIMEOUT)
        .await
        .map_err(|e| e.to_string())
}

async fn check_node(
    cfg: &Config,
    ctx: &SshContext,
    node: &Node,
    certificate_error: Option<&str>,
    report: &Result<Report, String>,
) -> NodeResult {
    let mut d = diagnose(ctx, node, cfg.health.kubelet_port, certificate_error).await;
    let mut checks: Vec<Check> = d.findings.drain(..).map(Check::from).collect();
    checks.push(kubelet::check(cfg, node, d.kubelet.take()).await);
    checks.push(konnectivity(cfg, node, report));
    NodeResult {
        name: node.name.clone(),
        address: node.address.to_string(),
        ssh_address: node.ssh_address.to_string(),
        checks,
    }
}

/// Is an agent connected for `node`, and how is its identity established?
fn konnectivity(cfg: &Config, node: &Node, report: &Result<Report, String>) -> Check {
    let check = |result, message| Check {
        check: "konnectivity",
        result,
        message,
    };
    let Some(k) = &cfg.konnectivity else {
        return check(
            "skip",
            "no [konnectivity] section: the node is reached over SSH only".into(),
        );
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            return check(
                "skip",
                format!("cannot ask the running bridge which agents are connected ({e})"),
            )
        }
    };
    let Some(entry) = report.nodes.iter().find(|n| n.name == node.name) else {
        return check(
            "warn",
            format!(
                "the running bridge does not know node {}: reload it (SIGHUP) after editing the config",
                node.name
            ),
        );
    };
    match &entry.paths.konnectivity {
        None if entry.route == Route::Konnectivity => check(
            "fail",
            format!(
                "no Konnectivity agent is connected for node {} although its route is konnectivity: \
                 check the konnectivity-agent pod on the node and that it reaches {}",
                node.name, k.agent_listen
            ),
        ),
        None => check(
            "skip",
            "no Konnectivity agent connected; the node's route is ssh, so none is needed".into(),
        ),
        Some(path) => {
            let state = path.state.as_str();
            match k.identity {
                AgentIdentity::Proven => check(
                    "ok",
                    format!(
                        "an agent is connected (path {state}); identity proven: its client \
                         certificate names node {} (CN system:node:{} or that DNS SAN)",
                        node.name, node.name
                    ),
                ),
                AgentIdentity::Claimed => check(
                    "warn",
                    format!(
                        "an agent is connected (path {state}), but its identity is only claimed \
                         (konnectivity.identity = \"claimed\"): give each agent its node's \
                         certificate and set identity = \"proven\""
                    ),
                ),
            }
        }
    }
}
