//! Command-line interface (clap) and the glue of each subcommand.

mod admin_auth;
mod agent_cmd;
mod agent_metrics;
mod config_cmd;
#[cfg(feature = "demo")]
mod demo;
mod docs_cmd;
mod doctor;
mod manifests_cmd;
mod migrate_cmd;
mod report_cmd;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Carries kube-apiserver's egress to the nodes over SSH tunnels.
#[derive(Debug, Parser)]
#[command(name = "sshbridge", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

pub use run::{hold_signals, release_signals};

impl Cli {
    /// Whether this is `sshbridge run` (which handles its own signals).
    pub fn runs_daemon(&self) -> bool {
        matches!(self.command, Command::Run(_))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon. SIGHUP reloads the config, SIGTERM drains and exits.
    Run(RunArgs),
    /// Start a simulated local cluster, push traffic through the bridge and
    /// print what happened per node. Needs no setup; ends by itself. Only
    /// in a build with the `demo` cargo feature.
    #[cfg_attr(not(feature = "demo"), command(hide = true))]
    Demo(DemoArgs),
    /// Check or print configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show tunnel health per node and path (`GET /report` on the admin
    /// API), or compare two saved reports with `report diff`.
    Report(report_cmd::ReportArgs),
    /// Run a Konnectivity agent: dial a Konnectivity server over TLS and
    /// serve the dials it sends (SIGTERM drains, a second SIGTERM exits).
    Agent(agent_cmd::AgentArgs),
    /// Move nodes from SSH to Konnectivity in batches, through the daemon's
    /// admin API: plan, apply, status, pause, resume, rollback, finalize.
    Migrate(migrate_cmd::MigrateArgs),
    /// Check each node from the bridge's point of view: sshd reachable,
    /// host key, authentication, a forward to the kubelet, the kubelet's
    /// certificate, the Konnectivity agent. Exit 0 all ok, 1 a check
    /// failed, 3 warnings only.
    Doctor(doctor::DoctorArgs),
    /// Print ready-to-apply manifests from the config: egress-selector,
    /// konnectivity-agent, static-pod, systemd, node-sshd.
    Manifests(manifests_cmd::ManifestsArgs),
    /// Print the completion script for a shell (bash, zsh, fish, ...).
    #[command(hide = true)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write it and one page per subcommand into DIR.
    #[command(hide = true)]
    Man {
        /// Directory for sshbridge.1, sshbridge-run.1, ...
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// How long open streams may run on after SIGTERM (or after their
    /// node is removed by a reload) before they are cut.
    #[arg(long, value_parser = humantime_duration, default_value = "25s")]
    drain_timeout: Duration,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=50))]
    nodes: u8,
    /// HTTPS requests per node.
    #[arg(long, default_value_t = 20)]
    requests: usize,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file; problems are printed as FILE:LINE:COL.
    Check {
        /// Configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Print an annotated example configuration.
    Example,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 25s, 2m)"))
}

/// Runs the chosen subcommand; the exit code follows DESIGN.md
/// (0 ok, 1 error, 2 usage, 3 regression).
pub async fn dispatch(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Run(args) => run::run(args).await,
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(args).await,
        #[cfg(not(feature = "demo"))]
        Command::Demo(_) => Err(anyhow::anyhow!(
            "this sshbridge was built without the `demo` feature (production builds hold \
             no simulation code); run `cargo run -p sshbridge --features demo -- demo`"
        )),
        Command::Config(ConfigCommand::Check { config }) => config_cmd::check(&config),
        Command::Config(ConfigCommand::Example) => config_cmd::example(),
        Command::Report(args) => report_cmd::run(args).await,
        Command::Agent(args) => agent_cmd::run(args).await,
        Command::Migrate(args) => migrate_cmd::run(args).await,
        Command::Manifests(args) => manifests_cmd::run(args),
        Command::Doctor(args) => doctor::run(args).await,
        Command::Completions { shell } => docs_cmd::completions(shell),
        Command::Man { dir } => docs_cmd::man(dir.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sshbridge: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr, human or JSON; `RUST_LOG` overrides the default level
/// (info, with the chatty SSH and HTTP/2 internals at warn).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,russh=warn,h2=warn,tower=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
