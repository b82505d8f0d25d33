//! `sshbridge report` (fetch `/report` from the admin API) and
//! `sshbridge report diff` (compare two saved reports; exit 3 on a
//! regression).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use sshbridge::admin_client::{fetch_report, AdminAddr};
use sshbridge::report::{diff, render, Report, Thresholds};

/// Where `report` looks when neither `--admin` nor `--config` is given.
const DEFAULT_ADMIN: &str = "unix:/run/sshbridge/admin.sock";

/// The whole request to the admin API must finish within this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// `sshbridge report [--admin ADDR] [-o table|json]`, or `report diff`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    command: Option<ReportCommand>,
    /// Admin API address: unix:/path or host:port. Default: `[admin].listen`
    /// of --config, else unix:/run/sshbridge/admin.sock.
    #[arg(long, value_name = "ADDR")]
    admin: Option<AdminAddr>,
    /// Configuration file whose `[admin].listen` to use.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    auth: super::admin_auth::AdminAuthArgs,
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Compare two saved reports node by node. Exits 3 when AFTER regressed,
    /// 0 when not, 1 when a file cannot be read.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
struct DiffArgs {
    /// The earlier report (JSON, from `sshbridge report -o json`).
    before: PathBuf,
    /// The later report.
    after: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
    /// p99 probe latency regressed when it grew by more than this factor
    /// (changes under 5 ms are ignored).
    #[arg(long, value_name = "F", default_value_t = 1.5, value_parser = factor)]
    p99_factor: f64,
    /// Probe failure ratio regressed when it rose by more than this.
    #[arg(long, value_name = "D", default_value_t = 0.05, value_parser = ratio)]
    failure_ratio_delta: f64,
    /// Reconnects regressed when more than N happened in between.
    #[arg(long, value_name = "N", default_value_t = 3)]
    reconnects: u64,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Aligned columns for people (coloured on a terminal unless NO_COLOR).
    Table,
    /// JSON for scripts.
    Json,
}

/// Runs `report` or `report diff`.
pub async fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(ReportCommand::Diff(d)) => run_diff(d),
        None => {
            let addr = args.auth.apply(admin_addr(args.admin, args.config)?)?;
            let report = fetch_report(&addr, FETCH_TIMEOUT).await?;
            match args.output {
                Output::Json => print!("{}", report.to_json()),
                Output::Table => print!("{}", render::report_table(&report, render::use_colour())),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let before = Report::load(&args.before)?;
    let after = Report::load(&args.after)?;
    let thresholds = Thresholds {
        p99_factor: args.p99_factor,
        failure_ratio_delta: args.failure_ratio_delta,
        reconnects: args.reconnects,
        ..Thresholds::default()
    };
    let d = diff(&before, &after, &thresholds);
    match args.output {
        Output::Json => print!("{}", render::diff_json(&d)),
        Output::Table => print!("{}", render::diff_table(&d, render::use_colour())),
    }
    Ok(if d.is_regression() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--admin`, else the config's `[admin].listen`, else the default socket.
fn admin_addr(admin: Option<AdminAddr>, config: Option<PathBuf>) -> anyhow::Result<AdminAddr> {
    if let Some(addr) = admin {
        return Ok(addr);
    }
    if let Some(path) = config {
        let cfg = sshbridge_config::load(&path)
            .with_context(|| format!("reading the admin address from {}", path.display()))?;
        return Ok(AdminAddr::from(&cfg.admin.listen));
    }
    Ok(DEFAULT_ADMIN
        .parse()
        .expect("the default admin address parses"))
}

fn factor(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 1.0 => Ok(f),
        _ => Err(format!("{s:?} is not a factor of at least 1 (e.g. 1.5)")),
    }
}

fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a ratio between 0 and 1 (e.g. 0.05)")),
    }
}
