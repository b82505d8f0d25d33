//! Running programs with a time bound and reading what they said.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// Runs `program args...` under coreutils' `timeout` (60 s), returning its
/// output; panics when it cannot be started.
pub fn run(program: impl AsRef<Path>, args: &[&str]) -> Output {
    let program = program.as_ref();
    Command::new("timeout")
        .arg("60")
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

/// Like [`run`], and the command must exit 0; returns its stdout.
pub fn run_ok(program: impl AsRef<Path>, args: &[&str]) -> String {
    let out = run(program.as_ref(), args);
    assert!(
        out.status.success(),
        "{} {args:?} exited {}:\nstdout: {}\nstderr: {}",
        program.as_ref().display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `"/etc/..."` path the example config names, created under `root`
/// (contents "x": `config check` only needs the files to exist, private
/// keys mode 0600).
pub fn example_files(root: &Path) {
    for chunk in sshbridge_config::EXAMPLE.split('"').skip(1).step_by(2) {
        if let Some(rel) = chunk.strip_prefix("/etc/") {
            let path = root.join("etc").join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            if !path.exists() {
                std::fs::write(&path, "x\n").unwrap();
            }
            let private = rel.ends_with(".key") || rel.ends_with("id_ed25519");
            let mode = if private { 0o600 } else { 0o644 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}
