//! `bench`: the sshbridge benchmarks of `scripts/bench`, side by side with
//! OpenSSH and at cluster scale, all on 127.0.0.0/8.
//!
//! Usage: `bench [--quick|--full] [--bin PATH] [--out FILE] [--only ssh|konn|scale|inventory]`.
//! Prints a table and writes a JSON report (default
//! `target/bench/report.json`). Exits 1 on errors only, never because a
//! number missed its target; in quick mode any broken stream or failed
//! request is an error. See docs/bench.md.

// A binary root finds its modules next to itself; these live in bench/.
#[path = "bench/bounds.rs"]
mod bounds;
#[path = "bench/daemon.rs"]
mod daemon;
#[path = "bench/interactive.rs"]
mod interactive;
#[path = "bench/inventory.rs"]
mod inventory;
#[path = "bench/inventory_api.rs"]
mod inventory_api;
#[path = "bench/konn_path.rs"]
mod konn_path;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/memory.rs"]
mod memory;
#[path = "bench/openssh.rs"]
mod openssh;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/scale.rs"]
mod scale;
#[path = "bench/sessions.rs"]
mod sessions;
#[path = "bench/ssh_path.rs"]
mod ssh_path;
#[path = "bench/upstream_konn.rs"]
mod upstream_konn;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

/// How long and how big the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// CI: under 3 minutes; scale N = 100, 1000; inventory N = 200. Any broken stream or
    /// failed request fails the run.
    Quick,
    /// Longer windows, three rounds per throughput row; N up to 5000.
    Full,
}

struct Args {
    mode: Mode,
    bin: PathBuf,
    out: PathBuf,
    only: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    // target/release/bench -> target/release/sshbridge, target/bench/.
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let mut args = Args {
        mode: Mode::Quick,
        bin: exe.with_file_name("sshbridge"),
        out: target.join("bench/report.json"),
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.mode = Mode::Quick,
            "--full" => args.mode = Mode::Full,
            "--bin" => args.bin = it.next().context("--bin needs a path")?.into(),
            "--out" => args.out = it.next().context("--out needs a path")?.into(),
            "--only" => {
                args.only = Some(
                    it.next()
                        .context("--only needs ssh, konn, scale or inventory")?,
                )
            }
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick|--full] [--bin PATH] [--out FILE] [--only ssh|konn|scale|inventory]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if let Some(only) = &args.only {
        if !["ssh", "konn", "scale", "inventory"].contains(&only.as_str()) {
            bail!("--only {only:?}: expected ssh, konn, scale or inventory");
        }
    }
    if !args.bin.exists() {
        bail!(
            "{} not found; build it with cargo build --release -p sshbridge",
            args.bin.display()
        );
    }
    Ok(args)
}

/// Raises the open-file soft limit to the hard limit: the scale runs hold
/// one socket per tunnel on each side, and the bridge inherits the limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

fn bridge_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| format!("sshbridge {}", env!("CARGO_PKG_VERSION")))
}

async fn run(args: &Args, nofile: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let out_dir = args.out.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&out_dir)?;
    // Everything the run starts lives under this directory; scripts/bench
    // uses the name to clean up after a crash.
    let mut work = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&out_dir)?;
    // BENCH_KEEP=1 keeps the logs and configs of the run for a post-mortem.
    if std::env::var_os("BENCH_KEEP").is_some() {
        work.disable_cleanup(true);
        eprintln!("bench: keeping {}", work.path().display());
    }
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut rows = Vec::new();
    let mut negotiated = serde_json::Map::new();
    if matches!(args.only.as_deref(), None | Some("ssh")) {
        eprintln!("bench: SSH path, bridge vs ssh -N -L ...");
        let found = ssh_path::run(&args.bin, &work.path().join("ssh"), args.mode).await?;
        rows.extend(found.rows);
        for (node, ciphers) in found.negotiated {
            negotiated.insert(node, json!(ciphers));
        }
    }
    if matches!(args.only.as_deref(), None | Some("konn")) {
        eprintln!("bench: Konnectivity path, bridge + sshbridge agent vs ssh -N -L ...");
        rows.extend(konn_path::run(&args.bin, &work.path().join("konn"), args.mode).await?);
    }
    if matches!(args.only.as_deref(), None | Some("scale")) {
        let plan = match args.mode {
            Mode::Quick => scale::Plan {
                sizes: vec![100, 1000],
                idle_window: Duration::from_secs(6),
                streams: 1000,
            },
            Mode::Full => scale::Plan {
                sizes: vec![100, 1000, 5000],
                idle_window: Duration::from_secs(15),
                streams: 1000,
            },
        };
        eprintln!("bench: scale, N = {:?} ...", plan.sizes);
        rows.extend(scale::run(&args.bin, &work.path().join("scale"), &plan).await?);
    }
    if matches!(args.only.as_deref(), None | Some("inventory")) {
        let plan = match args.mode {
            Mode::Quick => inventory::Plan {
                nodes: 200,
                add: 50,
                delete: 50,
            },
            Mode::Full => inventory::Plan {
                nodes: 5000,
                add: 500,
                delete: 500,
            },
        };
        eprintln!(
            "bench: inventory from a real kube-apiserver, N = {}, burst +{}/-{} ...",
            plan.nodes, plan.add, plan.delete
        );
        let dir = work.path().join("inventory");
        rows.extend(inventory::run(&args.bin, &dir, plan).await?);
    }
    rows.extend(upstream_konn::ssh_dials_versus(&rows));
    let table = report::table(&rows);
    println!("{table}");
    let header = json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "generated_at_unix": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "duration_s": started.elapsed().as_secs_f64(),
        "machine": report::machine(),
        "loadavg_at_start": load_before.trim(),
        "open_files_limit": nofile,
        "versions": {
            "sshbridge": bridge_version(&args.bin),
            "openssh": openssh::version(),
        },
        "ciphers": {
            "offered_by_sshd": ssh_path::CIPHERS,
            "negotiated_per_node": negotiated,
            "bridge_cipher_config": "none: sshbridge has no cipher key; each sshd offers one cipher, so the bridge must negotiate it",
        },
    });
    report::write_json(&args.out, header, &rows)?;
    println!(
        "report: {} ({:.0} s; load average at start {})",
        args.out.display(),
        started.elapsed().as_secs_f64(),
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let nofile = raise_nofile();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let limit = match args.mode {
        Mode::Quick => Duration::from_secs(230),
        Mode::Full => Duration::from_secs(1800),
    };
    let result = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::time::timeout(limit, run(&args, nofile)) => {
                r.map_err(|_| anyhow::anyhow!("the run took longer than {limit:?}"))?
            }
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    });
    // Dropping the runtime drops every task and with it every child
    // process handle (kill on drop) and in-process server.
    drop(rt);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
