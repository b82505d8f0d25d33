//! The Debian package, built by `scripts/deb` from the debug binary,
//! installed, removed and purged with dpkg on this machine (which must not
//! have sshbridge installed; the test cleans up after itself, the
//! `sshbridge` user included when it created it).

use std::path::Path;

use sshbridge_tests::bridge::bridge_bin;

use super::support::{run, run_ok};

const UNIT: &str = "/usr/lib/systemd/system/sshbridge.service";
const CONFIG: &str = "/etc/sshbridge/sshbridge.toml";

/// Purges the package (and the user when this test created it) however
/// the test ends.
struct Cleanup {
    remove_user: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "sshbridge"]);
        if self.remove_user {
            let _ = run("userdel", &["sshbridge"]);
        }
    }
}

#[test]
fn package_installs_with_unit_man_completions_conffile_and_user_and_purges_clean() {
    let bin = bridge_bin().unwrap();
    let status = run("dpkg-query", &["-W", "-f=${Status}", "sshbridge"]);
    let installed = String::from_utf8_lossy(&status.stdout).contains("installed");
    assert!(
        !installed
            && !Path::new("/usr/bin/sshbridge").exists()
            && !Path::new("/etc/sshbridge").exists(),
        "sshbridge is already installed on this machine; this test installs and purges \
         the package, so run it on a machine (or container) without it"
    );
    let had_user = run("getent", &["passwd", "sshbridge"]).status.success();
    let _cleanup = Cleanup {
        remove_user: !had_user,
    };
    let out = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/deb");
    let deb = run_ok(
        &script,
        &[
            "--binary",
            bin.to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
            "--fast",
        ],
    );
    let deb = deb.trim();

    // Contents: binary, unit, man pages, completions, config.
    let listing = run_ok("dpkg-deb", &["-c", deb]);
    for path in [
        "./usr/bin/sshbridge",
        "./usr/lib/systemd/system/sshbridge.service",
        "./usr/share/man/man1/sshbridge.1.gz",
        "./usr/share/man/man1/sshbridge-run.1.gz",
        "./usr/share/bash-completion/completions/sshbridge",
        "./usr/share/zsh/vendor-completions/_sshbridge",
        "./usr/share/fish/vendor_completions.d/sshbridge.fish",
        "./etc/sshbridge/sshbridge.toml",
    ] {
        assert!(listing.contains(path), "{path} missing from:\n{listing}");
    }
    let conffiles = run_ok("dpkg-deb", &["-I", deb, "conffiles"]);
    assert_eq!(conffiles.trim(), CONFIG);

    // Install.
    run_ok("dpkg", &["-i", deb]);
    let version = run_ok("/usr/bin/sshbridge", &["--version"]);
    assert_eq!(
        version.trim(),
        format!("sshbridge {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        sshbridge_config::EXAMPLE
    );
    let user = run_ok("getent", &["passwd", "sshbridge"]);
    let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    assert!(uid < 1000, "sshbridge must be a system user: {user}");
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/sshbridge run --config /etc/sshbridge/sshbridge.toml"),
        "{unit}"
    );
    assert!(
        !unit.contains("/tmp"),
        "the unit names a staging path:\n{unit}"
    );
    // systemd's own check of the installed unit (binary path, directives).
    let verify = run("systemd-analyze", &["verify", UNIT]);
    let verify_err = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !verify_err.contains("sshbridge.service:"),
        "systemd-analyze verify {UNIT}: {}\n{verify_err}",
        verify.status
    );
    let man = run_ok("zcat", &["/usr/share/man/man1/sshbridge.1.gz"]);
    assert!(man.contains(".TH sshbridge 1"), "{man}");
    let bash = std::fs::read_to_string("/usr/share/bash-completion/completions/sshbridge").unwrap();
    assert!(
        bash.contains("complete -F _sshbridge"),
        "not a bash completion script"
    );

    // Remove keeps the edited conffile; purge removes it.
    std::fs::write(CONFIG, "# edited by the operator\n").unwrap();
    run_ok("dpkg", &["-r", "sshbridge"]);
    assert!(!Path::new("/usr/bin/sshbridge").exists());
    assert!(!Path::new(UNIT).exists());
    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        "# edited by the operator\n",
        "dpkg -r must keep an edited conffile"
    );
    run_ok("dpkg", &["--purge", "sshbridge"]);
    assert!(
        !Path::new("/etc/sshbridge").exists(),
        "purge leaves /etc/sshbridge"
    );
    let status = run("dpkg-query", &["-W", "-f=${Status}", "sshbridge"]);
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains("installed"),
        "still known to dpkg after purge"
    );
}
