//! What the image's root holds, as a sorted list of [`Entry`]s.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{io_err, ImageError};

/// Where the binary goes in the image (on `PATH`, which the manifests'
/// `command: ["sshbridge", ...]` rely on).
pub const BINARY_PATH: &str = "usr/bin/sshbridge";

/// The non-root account of the image (the image's default user; the same
/// number distroless images use for "nonroot").
pub const USER_ID: u32 = 65532;

/// `/etc/passwd` of the image: root (for the static Pod reading root-owned
/// keys) and the `sshbridge` user the image runs as by default.
pub const PASSWD: &str = "root:x:0:0:root:/:/sbin/nologin\n\
sshbridge:x:65532:65532:sshbridge:/:/sbin/nologin\n\
nobody:x:65534:65534:nobody:/:/sbin/nologin\n";

/// `/etc/group` of the image.
pub const GROUP: &str = "root:x:0:\nsshbridge:x:65532:\nnogroup:x:65534:\n";

/// Where an entry's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A directory.
    Dir,
    /// A file copied from the build host (symlinks followed).
    Host(PathBuf),
    /// A file with these contents.
    Text(&'static str),
}

/// One path of the image root (relative, no leading `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the image, e.g. `usr/bin/sshbridge`.
    pub path: String,
    /// Its contents.
    pub source: Source,
    /// Permission bits.
    pub mode: u32,
}

/// The root for `binary`: the binary at [`BINARY_PATH`], every shared
/// library `ldd` names at the path the loader looks it up under, passwd and
/// group, and the directories above them; sorted so parents come first.
pub fn plan(binary: &Path) -> Result<Vec<Entry>, ImageError> {
    let mut files = vec![
        Entry {
            path: BINARY_PATH.into(),
            source: Source::Host(binary.to_path_buf()),
            mode: 0o755,
        },
        Entry {
            path: "etc/passwd".into(),
            source: Source::Text(PASSWD),
            mode: 0o644,
        },
        Entry {
            path: "etc/group".into(),
            source: Source::Text(GROUP),
            mode: 0o644,
        },
    ];
    for lib in shared_libraries(binary)? {
        let rel = lib.strip_prefix("/").unwrap_or(&lib);
        files.push(Entry {
            path: rel.display().to_string(),
            source: Source::Host(lib.clone()),
            mode: 0o755,
        });
    }
    let mut dirs = BTreeSet::new();
    for f in &files {
        let mut p = Path::new(&f.path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.display().to_string());
            p = d.parent();
        }
    }
    let mut all: Vec<Entry> = dirs
        .into_iter()
        .map(|path| Entry {
            path,
            source: Source::Dir,
            mode: 0o755,
        })
        .chain(files)
        .collect();
    all.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(all)
}

/// The shared libraries (and the ELF interpreter) `ldd` lists for
/// `binary`, as absolute paths. A statically linked binary has none.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(io_err("cannot run ldd on", binary))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // glibc's ldd says "not a dynamic executable" and exits 1 for a
        // static binary; anything else is a failure.
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("not a dynamic executable") || text.contains("statically linked") {
            return Ok(Vec::new());
        }
        return Err(ImageError::Ldd {
            binary: binary.to_path_buf(),
            why: format!("{} {}", out.status, err.trim()),
        });
    }
    parse_ldd(&text).map_err(|why| ImageError::Ldd {
        binary: binary.to_path_buf(),
        why,
    })
}

/// The paths in `ldd` output: `name => /path (0x...)` and the interpreter
/// line `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = BTreeSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") {
            continue;
        }
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("library {} not found", name.trim()));
                }
                rest
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.insert(PathBuf::from(path));
        } else if !line.starts_with("linux-vdso") && !line.starts_with("linux-gate") {
            return Err(format!("unexpected line {line:?}"));
        }
    }
    Ok(libs.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_every_library_and_the_interpreter() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f01)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f02)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f03)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let missing = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(missing.contains("libfoo.so.1"), "{missing}");
    }
}
