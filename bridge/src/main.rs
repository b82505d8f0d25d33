//! The `sshbridge` command: parses the command line, binds what the config
//! names, runs the daemon or one of the tools around it.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything else, so no signal finds a default disposition
    // before `run` handles it (see cli/run.rs).
    cli::hold_signals();
    let args = cli::Cli::parse();
    if !args.runs_daemon() {
        cli::release_signals();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sshbridge: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(cli::dispatch(args))
}
