//! Hidden `sshbridge completions SHELL` and `sshbridge man [--dir DIR]`:
//! shell completions and man pages generated from the clap definition, for
//! the Debian package and `scripts/install` (so they never drift from the
//! flags the binary really takes).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    // Into a buffer first: clap_complete panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "sshbridge", &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("cannot write the completion script to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Prints `sshbridge(1)` on stdout, or writes it and one page per
/// subcommand (`sshbridge-run.1`, ...) into `dir`.
pub fn man(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let cmd = Cli::command();
    match dir {
        None => {
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .context("cannot write the man page to stdout")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create man page directory {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
