//! `sshbridge config check|example`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// Validates a config file: prints every problem and exits 1, or its
/// warnings (on stderr) and a summary and exits 0.
pub fn check(path: &Path) -> anyhow::Result<ExitCode> {
    match sshbridge_config::load(path) {
        Ok(cfg) => {
            for w in cfg.warnings() {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: ok ({} node{}, bridge id {:?})",
                path.display(),
                cfg.nodes.len(),
                if cfg.nodes.len() == 1 { "" } else { "s" },
                cfg.bridge.id
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Prints the annotated example configuration.
pub fn example() -> anyhow::Result<ExitCode> {
    std::io::stdout().write_all(sshbridge_config::EXAMPLE.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
