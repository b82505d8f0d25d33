//! `sshbridge migrate ...`: the operator's side of the migration. The
//! controller runs in the daemon; every subcommand is one call to its admin
//! API (`/migration...`), and `apply` / `status -w` then follow the rollout
//! by polling `GET /migration`. Stopping the CLI never stops the migration.

mod follow;
mod status_table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;
use sshbridge::admin_client::{get, post, AdminAddr};
use sshbridge::manifests::{self, EgressOptions, EgressProtocol};
use sshbridge_migrate::{ApplyOptions, BatchSpec, FinalState, Plan, Status};
use sshbridge_report::render::use_colour;
use status_table::status_text;

/// Where the admin API is looked for without `--admin` or `--config`.
const DEFAULT_ADMIN: &str = "unix:/run/sshbridge/admin.sock";
/// The config `finalize` reads without `--config` (for the egress socket).
const DEFAULT_CONFIG: &str = "/etc/sshbridge/sshbridge.toml";
/// Limit of one admin API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `sshbridge migrate SUBCOMMAND [--admin ADDR | --config FILE] [-o table|json]`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    command: MigrateCommand,
    /// Admin API address: unix:/path or host:port. Default: `[admin].listen`
    /// of --config, else unix:/run/sshbridge/admin.sock.
    #[arg(long, value_name = "ADDR", global = true)]
    admin: Option<AdminAddr>,
    /// Configuration file: its `[admin].listen`, and for `finalize` its
    /// egress sockets (default there: /etc/sshbridge/sshbridge.toml).
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Output format: tables and progress for people, or the admin API's
    /// JSON documents (one per line).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(flatten)]
    auth: super::admin_auth::AdminAuthArgs,
}

#[derive(Debug, Subcommand)]
enum MigrateCommand {
    /// Preflight: which nodes would move in which batches, which are not
    /// ready and why, and what each step checks. Changes nothing.
    Plan(RolloutArgs),
    /// Start the rollout in the daemon, then follow it until it finishes,
    /// pauses or aborts. Exits 3 when a node rolled back.
    Apply(RolloutArgs),
    /// Show the rollout; with -w, follow it like `apply` does.
    Status {
        /// Follow the rollout until it settles (Ctrl-C stops only the CLI).
        #[arg(long, short = 'w')]
        watch: bool,
    },
    /// Start no new node (running soaks go on) until `resume`.
    Pause,
    /// Continue a paused rollout.
    Resume,
    /// Send nodes back to SSH for new streams (open streams are not cut).
    Rollback {
        /// Nodes to roll back; a running rollout is paused.
        #[arg(value_name = "NODE", required_unless_present = "all")]
        nodes: Vec<String>,
        /// Every node; the rollout is aborted.
        #[arg(long, conflicts_with = "nodes")]
        all: bool,
    },
    /// When every node is done: record the end state, close the SSH
    /// sessions of done nodes (a rollback reconnects them) and print
    /// kube-apiserver's EgressSelectorConfiguration for it.
    Finalize {
        /// Write the EgressSelectorConfiguration to FILE instead of stdout.
        #[arg(long, value_name = "FILE")]
        write_egress_selector: Option<PathBuf>,
        /// proxyProtocol for kube-apiserver: grpc or http-connect (default:
        /// grpc when egress.grpc_uds is set or --uds is given).
        #[arg(long, value_parser = parse_protocol)]
        protocol: Option<EgressProtocol>,
        /// Point kube-apiserver at this socket (e.g. an upstream
        /// konnectivity-server's) instead of the bridge's.
        #[arg(long, value_name = "PATH")]
        uds: Option<PathBuf>,
    },
}

/// Overrides of one rollout.
#[derive(Debug, Args)]
struct RolloutArgs {
    /// Nodes per batch: a count (3) or a percentage of all nodes (25%).
    #[arg(long, value_name = "N|P%")]
    batch_size: Option<BatchSpec>,
    /// How long each cut-over node is watched before it is done.
    #[arg(long, value_name = "D", value_parser = super::humantime_duration)]
    soak: Option<Duration>,
    /// A breach aborts the rollout (every node not yet done goes back to
    /// ssh) instead of pausing it.
    #[arg(long)]
    abort_on_failure: bool,
    /// Only these nodes (comma-separated).
    #[arg(long, value_name = "a,b", value_delimiter = ',')]
    nodes: Option<Vec<String>>,
}

impl RolloutArgs {
    fn options(self) -> ApplyOptions {
        ApplyOptions {
            batch_size: self.batch_size,
            soak: self.soak,
            abort_on_failure: self.abort_on_failure,
            nodes: self.nodes,
        }
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Tables, and a progress display on a terminal.
    Table,
    /// The admin API's JSON documents, one per line.
    Json,
}

fn parse_protocol(s: &str) -> Result<EgressProtocol, String> {
    s.parse()
}

/// Runs one `migrate` subcommand.
pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let addr = args
        .auth
        .apply(admin_addr(args.admin.clone(), args.config.as_ref())?)?;
    let json = args.output == Output::Json;
    match args.command {
        MigrateCommand::Plan(r) => {
            let (plan, raw) =
                call::<Plan>(&addr, "/migration/plan", Some(&body(&r.options())?)).await?;
            print_doc(json, &raw, &plan);
            Ok(ExitCode::SUCCESS)
        }
        MigrateCommand::Apply(r) => {
            let (plan, raw) =
                call::<Plan>(&addr, "/migration/apply", Some(&body(&r.options())?)).await?;
            print_doc(json, &raw, &plan);
            follow::follow(&addr, mode(args.output)).await
        }
        MigrateCommand::Status { watch: true } => follow::follow(&addr, mode(args.output)).await,
        MigrateCommand::Status { watch: false } => {
            let (status, raw) = call::<Status>(&addr, "/migration", None).await?;
            print_status(json, &raw, &status);
            Ok(exit_for(&status))
        }
        MigrateCommand::Pause => pause_or_resume(&addr, "pause", json).await,
        MigrateCommand::Resume => pause_or_resume(&addr, "resume", json).await,
        MigrateCommand::Rollback { nodes, all } => {
            let req = if all {
                serde_json::json!({ "all": true })
            } else {
                serde_json::json!({ "nodes": nodes })
            };
            let (done, raw) =
                call::<RolledBack>(&addr, "/migration/rollback", Some(&req.to_string())).await?;
            if json {
                println!("{}", compact(&raw));
            } else if done.rolled_back.is_empty() {
                println!("No node needed a rollback; every node named already serves over ssh.");
            } else {
                println!(
                    "Rolled back to ssh (new streams; open ones finish where they are): {}",
                    done.rolled_back.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        MigrateCommand::Finalize {
            write_egress_selector,
            protocol,
            uds,
        } => {
            finalize(
                &addr,
                args.config,
                json,
                write_egress_selector,
                EgressOptions { protocol, uds },
            )
            .await
        }
    }
}

async fn pause_or_resume(addr: &AdminAddr, verb: &str, json: bool) -> anyhow::Result<ExitCode> {
    let path = format!("/migration/{verb}");
    let (status, raw) = call::<Status>(addr, &path, Some("{}")).await?;
    print_status(json, &raw, &status);
    Ok(exit_for(&status))
}

/// The answer of `POST /migration/rollback`.
#[derive(Debug, serde::Deserialize)]
struct RolledBack {
    rolled_back: Vec<String>,
}

async fn finalize(
    addr: &AdminAddr,
    config: Option<PathBuf>,
    json: bool,
    out_file: Option<PathBuf>,
    opts: EgressOptions,
) -> anyhow::Result<ExitCode> {
    // Settle the manifest before the daemon records anything, so a config
    // problem never leaves a finalized migration without its manifest.
    let (protocol, socket, source) = match (&opts.uds, config) {
        (Some(uds), None) => (
            opts.protocol.unwrap_or(EgressProtocol::Grpc),
            uds.clone(),
            PathBuf::from("--uds"),
        ),
        (_, config) => {
            let path = config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
            let path = std::path::absolute(&path).unwrap_or(path);
            let cfg = sshbridge_config::load(&path).with_context(|| {
                format!(
                    "finalize reads the egress sockets from {}; pass --config FILE, or --uds PATH",
                    path.display()
                )
            })?;
            let (p, s) = manifests::resolve_egress(&cfg, &opts)?;
            (p, s, cfg.source)
        }
    };
    let yaml = manifests::egress_selector_yaml(protocol, &socket, &source);
    let (state, raw) = call::<FinalState>(addr, "/migration/finalize", Some("{}")).await?;
    if let Some(file) = &out_file {
        std::fs::write(file, &yaml).with_context(|| {
            format!(
                "the migration is finalized, but writing {} failed; rerun `sshbridge manifests \
                 egress-selector` to get the file",
                file.display()
            )
        })?;
    }
    if json {
        let doc: serde_json::Value = serde_json::from_slice(&raw)?;
        let out = serde_json::json!({ "final_state": doc, "egress_selector": yaml });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    let summary = format!(
        "Finalized at {}: {} node(s) serve over konnectivity: {}.\n\
         kube-apiserver's `cluster` egress: {protocol} over {}.",
        state.finalized_at,
        state.nodes.len(),
        state.nodes.join(", "),
        socket.display()
    );
    match &out_file {
        Some(file) => println!(
            "{summary}\nWrote the EgressSelectorConfiguration to {}; point kube-apiserver's \
             --egress-selector-config-file at it and restart kube-apiserver.",
            file.display()
        ),
        None => {
            // Comments, so the whole output can be saved as the YAML file.
            for line in summary.lines() {
                println!("# {line}");
            }
            print!("{yaml}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn mode(output: Output) -> follow::Mode {
    use std::io::IsTerminal;
    match output {
        Output::Json => follow::Mode::Json,
        Output::Table if std::io::stdout().is_terminal() => follow::Mode::Terminal,
        Output::Table => follow::Mode::Plain,
    }
}

/// Exit 3 when a node rolled back, else 0.
fn exit_for(status: &Status) -> ExitCode {
    if status.regressed() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

fn body(opts: &ApplyOptions) -> anyhow::Result<String> {
    Ok(serde_json::to_string(opts)?)
}

/// One admin API call (`POST` when `body` is given); the parsed document and
/// its raw JSON.
async fn call<T: DeserializeOwned>(
    addr: &AdminAddr,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(T, Vec<u8>)> {
    let raw = match body {
        Some(b) => post(addr, path, b, CALL_TIMEOUT).await?,
        None => get(addr, path, CALL_TIMEOUT).await?,
    };
    let doc = parse(addr, path, &raw)?;
    Ok((doc, raw))
}

fn parse<T: DeserializeOwned>(addr: &AdminAddr, path: &str, raw: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(raw).with_context(|| {
        format!(
            "admin API at {addr} answered {path} with a document this CLI cannot read; \
             are `sshbridge` and the daemon the same version?"
        )
    })
}

/// Prints the status as a table, or its raw JSON on one line.
fn print_status(json: bool, raw: &[u8], status: &Status) {
    if json {
        println!("{}", compact(raw));
    } else {
        print!("{}", status_text(status, use_colour()));
    }
}

/// Prints `doc` as text, or its raw JSON on one line.
fn print_doc<T: std::fmt::Display>(json: bool, raw: &[u8], doc: &T) {
    if json {
        println!("{}", compact(raw));
    } else {
        println!("{doc}");
    }
}

/// A JSON document on one line (as received when it cannot be parsed).
fn compact(raw: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(v) => v.to_string(),
        Err(_) => String::from_utf8_lossy(raw).trim().to_string(),
    }
}

/// `--admin`, else the config's `[admin].listen`, else the default socket.
fn admin_addr(admin: Option<AdminAddr>, config: Option<&PathBuf>) -> anyhow::Result<AdminAddr> {
    if let Some(addr) = admin {
        return Ok(addr);
    }
    if let Some(path) = config {
        let cfg = sshbridge_config::load(path)
            .with_context(|| format!("reading the admin address from {}", path.display()))?;
        return Ok(AdminAddr::from(&cfg.admin.listen));
    }
    Ok(DEFAULT_ADMIN
        .parse()
        .expect("the default admin address parses"))
}
