//! Where the migration state lives between restarts. Every write is atomic
//! and durable: temp file in the same directory, fsync, rename over the old
//! file, fsync of the directory. A file this build cannot read is refused
//! and never overwritten.
//!
//! One daemon owns a store: [`open_store`] takes an exclusive `flock` on
//! `PATH.lock` (which holds the owner's pid) for as long as the store lives,
//! and a second daemon on the same file is refused, naming that pid. The
//! temp file is created fresh (`O_EXCL|O_NOFOLLOW`, mode 0600), so a
//! symlink planted at its name is never followed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::state::{MigrationState, SCHEMA};

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The `[migration] store` string names no supported store.
    #[error("migration store {spec:?} is not supported in this version: {why}")]
    Unsupported {
        /// The string from the config.
        spec: String,
        /// What is supported instead.
        why: String,
    },
    /// The file is not a state file this build understands.
    #[error(
        "migration state file {} is corrupt ({problem}); it was left untouched. \
         Restore it from a backup, or move it aside to start over (every node is then \
         treated as not migrated, so check routes with `sshbridge report` first)",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The file was written by a newer sshbridge.
    #[error(
        "migration state file {} has schema {found}, newer than the {supported} this \
         sshbridge reads; it was left untouched. Run the sshbridge version that wrote it",
        path.display()
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its schema.
        found: u64,
        /// The schema this build reads and writes.
        supported: u32,
    },
    /// Another process holds the store's lock.
    #[error(
        "migration state file {} is in use by another sshbridge (pid {}, lock {}); \
         two daemons must not share one store: stop that one, or give this one its own \
         [migration] store",
        path.display(),
        pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
        lock.display()
    )]
    Locked {
        /// The state file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The holder's pid, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// Reading or writing failed.
    #[error("migration state file {}: cannot {op}: {source}", path.display())]
    Io {
        /// The file (or its temp file or directory).
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A durable home for [`MigrationState`]. The controller calls it from its
/// task, synchronously: a write is a few kilobytes and an fsync, once per
/// transition, and a transition must not proceed before it lands.
pub trait Store: Send + 'static {
    /// The saved state, or `None` when nothing was ever saved.
    fn load(&self) -> Result<Option<MigrationState>, StoreError>;
    /// Save `state` so that a crash at any instant leaves either the old or
    /// the new state, complete.
    fn save(&mut self, state: &MigrationState) -> Result<(), StoreError>;
    /// Where the state lives, for messages.
    fn describe(&self) -> String;
}

/// Open the store a `[migration] store` string names: `file:PATH`.
pub fn open_store(spec: &str) -> Result<FileStore, StoreError> {
    if let Some(path) = spec.strip_prefix("file:") {
        if path.is_empty() {
            return Err(StoreError::Unsupported {
                spec: spec.to_owned(),
                why: "file: needs a path, e.g. file:/var/lib/sshbridge/migration.json".into(),
            });
        }
        let mut store = FileStore::new(path);
        store.lock()?;
        return Ok(store);
    }
    let why = if spec.starts_with("etcd://") {
        "the etcd store is planned; use file:PATH on each control-plane host for now"
    } else {
        "write file:PATH, e.g. file:/var/lib/sshbridge/migration.json"
    };
    Err(StoreError::Unsupported {
        spec: spec.to_owned(),
        why: why.into(),
    })
}

/// The state as one JSON file.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
    /// The open lock file while this store holds the lock; dropping the
    /// last clone closes it, which releases the `flock`.
    lock: Option<Arc<File>>,
}

impl FileStore {
    /// A store at `path` (created on first save; its directory must exist).
    /// It takes no lock; [`open_store`] does, or call [`FileStore::lock`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore {
            path: path.into(),
            lock: None,
        }
    }

    /// The lock file beside the state file: `PATH.lock`.
    pub fn lock_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes an exclusive lock on the store for the life of this value (and
    /// its clones), writing this process's pid into the lock file. Fails
    /// with [`StoreError::Locked`], naming the holder's pid, when another
    /// process holds it.
    pub fn lock(&mut self) -> Result<(), StoreError> {
        if self.lock.is_some() {
            return Ok(());
        }
        let path = self.lock_path();
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(self.io(&path, "open its lock file"))?;
        // SAFETY: flock(2) on a descriptor this function owns. (nix's
        // `Flock` would take the file, which is read below on failure.)
        #[allow(unsafe_code)]
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(self.io(&path, "lock it")(e));
            }
            let mut text = String::new();
            let _ = f.read_to_string(&mut text);
            return Err(StoreError::Locked {
                path: self.path.clone(),
                lock: path,
                pid: text.trim().parse().ok(),
            });
        }
        let pid = format!("{}\n", std::process::id());
        f.set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(pid.as_bytes()))
            .and_then(|()| f.sync_all())
            .map_err(self.io(&path, "write its lock file"))?;
        self.lock = Some(Arc::new(f));
        Ok(())
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_owned();
        move |source| StoreError::Io { path, op, source }
    }

    fn corrupt(&self, problem: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            problem: problem.into(),
        }
    }
}

impl Store for FileStore {
    fn load(&self) -> Result<Option<MigrationState>, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&self.path, "read it")(e)),
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| self.corrupt(format!("not valid JSON: {e}")))?;
        let found = value
            .get("schema")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| self.corrupt("no numeric \"schema\" field"))?;
        if found > u64::from(SCHEMA) {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found,
                supported: SCHEMA,
            });
        }
        if found < u64::from(SCHEMA) {
            return Err(self.corrupt(format!("unknown old schema {found}")));
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| self.corrupt(e.to_string()))
    }

    fn save(&mut self, state: &MigrationState) -> Result<(), StoreError> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "migration.json".into());
        let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
        let mut json = serde_json::to_vec_pretty(state).map_err(|e| StoreError::Io {
            path: self.path.clone(),
            op: "encode the state",
            source: io::Error::other(e),
        })?;
        json.push(b'\n');
        let write = || -> Result<(), StoreError> {
            // A temp file left by a crash of this pid is ours to replace;
            // anything else at its name (a symlink included) is not
            // followed: O_EXCL|O_NOFOLLOW fails on it.
            if fs::symlink_metadata(&tmp).is_ok_and(|m| m.file_type().is_file()) {
                let _ = fs::remove_file(&tmp);
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)
                .map_err(self.io(&tmp, "create its temp file"))?;
            f.write_all(&json)
                .map_err(self.io(&tmp, "write its temp file"))?;
            f.sync_all().map_err(self.io(&tmp, "fsync its temp file"))?;
            fs::rename(&tmp, &self.path)
                .map_err(self.io(&self.path, "rename the temp file over it"))
        };
        if let Err(e) = write() {
            if fs::symlink_metadata(&tmp).is_ok_and(|m| m.file_type().is_file()) {
                let _ = fs::remove_file(&tmp);
            }
            return Err(e);
        }
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io(&dir, "fsync its directory"))
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }
}

#[cfg(test)]
mod tests;
