//! A temp directory with the files configs point at, and fixture helpers.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sshbridge_config::{Config, ConfigError, Diagnostic};

/// A temp dir holding key and CA files:
/// `id_ed25519` and `tls.key` (0600), `open.key` (0644), `known_hosts`,
/// `ca.crt`, `tls.crt` (0644), `admin.token` and `kubeconfig` (0600), and a subdirectory `subdir`.
pub struct Kit {
    pub dir: tempfile::TempDir,
}

impl Kit {
    pub fn new() -> Kit {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = Kit { dir };
        for (name, mode) in [
            ("id_ed25519", 0o600),
            ("tls.key", 0o600),
            ("open.key", 0o644),
            ("known_hosts", 0o644),
            ("ca.crt", 0o644),
            ("tls.crt", 0o644),
            ("admin.token", 0o600),
            ("kubeconfig", 0o600),
        ] {
            k.write_file(name, "placeholder\n", mode);
        }
        fs::create_dir(k.path("subdir")).expect("mkdir");
        k
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write_file(&self, rel: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir -p");
        }
        fs::write(&p, text).expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    /// Writes `text` (with `@DIR@` replaced by the temp dir) as `name` in the
    /// temp dir and loads it.
    pub fn load(&self, name: &str, text: &str) -> Result<Config, ConfigError> {
        let text = text.replace("@DIR@", &self.dir.path().display().to_string());
        let p = self.path(name);
        fs::write(&p, text).expect("write config");
        sshbridge_config::load(&p)
    }
}

/// The fixture files of one folder, sorted by name.
pub fn fixtures(kind: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut out: Vec<_> = fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(&p).expect("read fixture"))
        })
        .collect();
    out.sort();
    out
}

/// The `# expect: LINE:COL: substring` lines at the top of a fixture
/// (`@DIR@` in the substring stands for the kit dir, as in the body).
pub fn expectations(text: &str) -> Vec<(usize, usize, String)> {
    text.lines()
        .map_while(|l| l.strip_prefix("# expect: "))
        .map(|e| {
            let mut parts = e.splitn(3, ':');
            let line = parts.next().unwrap().trim().parse().expect("expect line");
            let col = parts.next().unwrap().trim().parse().expect("expect col");
            (
                line,
                col,
                parts.next().expect("expect text").trim().to_owned(),
            )
        })
        .collect()
}

/// Whether `d` is at `line:col` and reads (as `MESSAGE (hint: HINT)`)
/// with `text` in it.
pub fn matches(d: &Diagnostic, line: usize, col: usize, text: &str) -> bool {
    d.line == line && d.column == col && d.to_string().contains(text)
}
