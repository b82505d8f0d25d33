//! The state as one JSON file, for a single bridge. Every write is atomic
//! and durable: temp file in the same directory, fsync, rename over the old
//! file, fsync of the directory. A file this build cannot read is refused
//! and never overwritten.
//!
//! One daemon owns a store: [`super::open_store`] takes an exclusive `flock` on
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

use super::{decode, DecodeError, Store, StoreError};
use crate::state::{MigrationState, SCHEMA};

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
    /// It takes no lock; [`super::open_store`] does, or call [`FileStore::lock`].
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

impl FileStore {
    /// The saved state, or `None` when the file does not exist
    /// (synchronously; [`Store::load`] awaits the same).
    pub fn read(&self) -> Result<Option<MigrationState>, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&self.path, "read it")(e)),
        };
        decode(&bytes).map(Some).map_err(|e| match e {
            DecodeError::Corrupt(problem) => self.corrupt(problem),
            DecodeError::Newer(found) => StoreError::NewerSchema {
                path: self.path.clone(),
                found,
                supported: SCHEMA,
            },
        })
    }

    /// Saves `state` atomically and durably (synchronously; [`Store::save`]
    /// awaits the same).
    pub fn write(&self, state: &MigrationState) -> Result<(), StoreError> {
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
}

impl Store for FileStore {
    async fn load(&mut self) -> Result<Option<MigrationState>, StoreError> {
        self.read()
    }

    async fn save(&mut self, state: &MigrationState) -> Result<(), StoreError> {
        self.write(state)
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }
}
