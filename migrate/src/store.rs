//! Where the migration state lives between restarts. Every write is atomic
//! and durable: temp file in the same directory, fsync, rename over the old
//! file, fsync of the directory. A file this build cannot read is refused
//! and never overwritten.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
        return Ok(FileStore::new(path));
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
}

impl FileStore {
    /// A store at `path` (created on first save; its directory must exist).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore { path: path.into() }
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
        let mut json = serde_json::to_vec_pretty(state).expect("state serializes");
        json.push(b'\n');
        let write = || -> Result<(), StoreError> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(self.io(&tmp, "create its temp file"))?;
            f.write_all(&json)
                .map_err(self.io(&tmp, "write its temp file"))?;
            f.sync_all().map_err(self.io(&tmp, "fsync its temp file"))?;
            fs::rename(&tmp, &self.path)
                .map_err(self.io(&self.path, "rename the temp file over it"))
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
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
mod tests {
    use super::*;
    use crate::state::NodePhase;

    fn sample() -> MigrationState {
        let mut s = MigrationState::default();
        s.transition("node-a", NodePhase::Shadow, "apply").unwrap();
        s
    }

    #[test]
    fn missing_file_is_a_fresh_start_and_saves_are_complete_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open_store(&format!("file:{}/m.json", dir.path().display())).unwrap();
        assert!(store.load().unwrap().is_none());
        let first = MigrationState::default();
        store.save(&first).unwrap();
        let second = sample();
        store.save(&second).unwrap();
        assert_eq!(store.load().unwrap(), Some(second));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["m.json"], "a temp file was left behind");
        let text = fs::read_to_string(dir.path().join("m.json")).unwrap();
        assert!(text.contains("\"schema\": 1"), "{text}");
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn corrupt_file_is_refused_named_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        for bad in [
            &b"{\"schema\": 1, \"phase\": "[..],
            b"[1,2]",
            b"{\"schema\":1}",
        ] {
            fs::write(&path, bad).unwrap();
            let store = FileStore::new(&path);
            let err = store.load().unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("left untouched"), "{msg}");
            assert_eq!(fs::read(&path).unwrap(), bad);
        }
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        let mut v = serde_json::to_value(sample()).unwrap();
        v["schema"] = 2.into();
        v["something_new"] = true.into();
        let text = v.to_string();
        fs::write(&path, &text).unwrap();
        let err = FileStore::new(&path).load().unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("newer"));
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn only_file_stores_are_supported() {
        let err = open_store("etcd://127.0.0.1:2379/sshbridge").unwrap_err();
        assert!(
            err.to_string().contains("not supported in this version"),
            "{err}"
        );
        assert!(open_store("file:").is_err());
        assert!(open_store("/var/lib/x.json").is_err());
    }
}
