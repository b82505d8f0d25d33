//! The host directories the daemon reads and writes, from its config: what
//! a static Pod mounts and what a systemd unit must leave writable.

use std::path::{Path, PathBuf};

use sshbridge_config::{Config, Listen};

/// One host directory the daemon needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dir {
    /// Absolute path.
    pub path: PathBuf,
    /// Whether the daemon creates files in it (sockets, the state store).
    pub writable: bool,
}

/// The state store's directory, for a `file:PATH` store.
pub(crate) fn store_dir(cfg: &Config) -> Option<PathBuf> {
    let path = cfg.migration.store.strip_prefix("file:")?;
    Path::new(path)
        .parent()
        .filter(|p| p.is_absolute())
        .map(Path::to_path_buf)
}

/// Directories the daemon creates its unix sockets in.
pub(crate) fn socket_dirs(cfg: &Config) -> Vec<PathBuf> {
    let e = &cfg.egress;
    let admin = match &cfg.admin.listen {
        Listen::Unix(p) => Some(p),
        Listen::Tcp(_) => None,
    };
    [e.http_connect_uds.as_ref(), e.grpc_uds.as_ref(), admin]
        .into_iter()
        .flatten()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .filter(|p| p.is_absolute())
        .collect()
}

/// Every directory the daemon needs, the fewest that cover all its files:
/// a directory inside one already listed with at least its access is left
/// out. Sorted by path.
pub(crate) fn dirs(cfg: &Config) -> Vec<Dir> {
    let mut read: Vec<&Path> = vec![&cfg.source, &cfg.ssh.identity, &cfg.ssh.known_hosts];
    read.extend(cfg.health.kubelet_ca.as_deref());
    if let Some(t) = &cfg.egress.http_connect_tcp {
        read.extend([t.cert.as_path(), &t.key, &t.client_ca]);
    }
    if let Some(k) = &cfg.konnectivity {
        read.extend([k.cert.as_path(), &k.key]);
        read.extend(k.client_ca.as_deref());
    }
    let mut all: Vec<Dir> = read
        .into_iter()
        .filter_map(Path::parent)
        .filter(|p| p.is_absolute())
        .map(|p| Dir {
            path: p.to_path_buf(),
            writable: false,
        })
        .collect();
    all.extend(
        socket_dirs(cfg)
            .into_iter()
            .chain(store_dir(cfg))
            .map(|path| Dir {
                path,
                writable: true,
            }),
    );
    // Writable first, so a read-only twin of a writable directory goes.
    all.sort_by(|a, b| a.path.cmp(&b.path).then(b.writable.cmp(&a.writable)));
    let mut out: Vec<Dir> = Vec::new();
    for d in all {
        let covered = out
            .iter()
            .any(|o| d.path.starts_with(&o.path) && (o.writable || !d.writable));
        if !covered {
            out.push(d);
        }
    }
    out
}

/// A DNS-label volume name for `path`, e.g. `/etc/sshbridge` -> `etc-sshbridge`.
pub(crate) fn volume_name(path: &Path, taken: &[String]) -> String {
    let mut base: String = path
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while base.contains("--") {
        base = base.replace("--", "-");
    }
    let mut base = base.trim_matches('-').to_string();
    if base.is_empty() {
        base = "root".into();
    }
    base.truncate(56);
    let base = base.trim_end_matches('-').to_string();
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}
