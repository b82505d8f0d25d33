//! Where the migration state lives between restarts: one JSON file for a
//! single bridge ([`FileStore`], `file:PATH`), or one object in the
//! Kubernetes API for a highly available control plane (`kubernetes:NS/NAME`,
//! implemented in `sshbridge-kubeapi`, which owns the API client).
//!
//! Every store writes the same document ([`encode`]) and refuses, never
//! overwrites, one this build cannot read ([`decode`]).

mod file;

use std::future::Future;
use std::io;
use std::path::PathBuf;

use crate::state::{MigrationState, SCHEMA};

pub use file::FileStore;

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The `[migration] store` string names no supported store.
    #[error("migration store {spec:?} is not supported: {why}")]
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
    /// Another writer changed the record since this store read it: this
    /// write was not applied. The writer must read the record again and
    /// decide anew; it never repeats the write blindly.
    #[error(
        "migration record {object} was changed by another writer since this bridge read it \
         ({seen}); this write was not applied, and the record is read again. Two bridges \
         driving one rollout: check that only the leader steps"
    )]
    Conflict {
        /// `configmap NS/NAME`.
        object: String,
        /// The version this store had read (`resourceVersion 123`, or
        /// `none: it did not exist`).
        seen: String,
    },
    /// The record was deleted after this store read or wrote it.
    #[error(
        "migration record {object} was deleted while this bridge uses it; it was not \
         recreated (that would forget every node's migration). Restore it from a backup \
         (`kubectl apply -f`), or restart the bridges to start over from an empty record \
         (every node is then treated as not migrated, so check routes with \
         `sshbridge report` first)"
    )]
    Deleted {
        /// `configmap NS/NAME`.
        object: String,
    },
    /// The record holds something this build cannot read.
    #[error(
        "migration record {object} is not a record this sshbridge reads ({problem}); it was \
         left untouched. Restore it from a backup (`kubectl apply -f`), run the sshbridge \
         version that wrote it, or delete it to start over (`kubectl delete {object}`; every \
         node is then treated as not migrated, so check routes with `sshbridge report` first)"
    )]
    RecordCorrupt {
        /// `configmap NS/NAME`.
        object: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The Kubernetes API refused or did not answer.
    #[error("migration record {object}: cannot {op}: {source}")]
    Api {
        /// `configmap NS/NAME`.
        object: String,
        /// What was being done.
        op: &'static str,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Whether another writer won: the caller must read the record again
    /// rather than retry the same write.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

/// A durable home for [`MigrationState`]. The controller awaits every call
/// from its task: a transition must not proceed before its write lands.
pub trait Store: Send + 'static {
    /// The saved state, or `None` when nothing was ever saved. A store with
    /// optimistic concurrency remembers the version it read, so that the
    /// next [`Store::save`] fails with [`StoreError::Conflict`] if anyone
    /// wrote in between.
    fn load(&mut self) -> impl Future<Output = Result<Option<MigrationState>, StoreError>> + Send;
    /// Save `state` so that a crash at any instant leaves either the old or
    /// the new state, complete.
    fn save(
        &mut self,
        state: &MigrationState,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Where the state lives, for messages.
    fn describe(&self) -> String;
    /// Resolves when the saved state may have changed since it was last
    /// loaded: a follower then loads it and applies its routes. A store
    /// that can watch (the Kubernetes API) resolves on the change itself;
    /// this default resolves every [`FOLLOW_EVERY`], a poll.
    fn changed(&mut self) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(FOLLOW_EVERY)
    }
}

/// How often a follower reads a store that cannot watch, and a store that
/// can while its watch is broken.
pub const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A `[migration] store` string, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `file:PATH`: one bridge.
    File(PathBuf),
    /// `kubernetes:NAMESPACE/NAME`: a ConfigMap shared by every bridge.
    Kubernetes {
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
    },
}

impl StoreSpec {
    /// Parses `file:PATH` or `kubernetes:NAMESPACE/NAME`; the error says
    /// what to write instead.
    pub fn parse(spec: &str) -> Result<StoreSpec, StoreError> {
        let unsupported = |why: &str| StoreError::Unsupported {
            spec: spec.to_owned(),
            why: why.to_owned(),
        };
        if let Some(path) = spec.strip_prefix("file:") {
            if path.is_empty() {
                return Err(unsupported(
                    "file: needs a path, e.g. file:/var/lib/sshbridge/migration.json",
                ));
            }
            return Ok(StoreSpec::File(PathBuf::from(path)));
        }
        if let Some(rest) = spec.strip_prefix("kubernetes:") {
            return match rest.split_once('/') {
                Some((ns, name)) if dns_label(ns) && dns_subdomain(name) => {
                    Ok(StoreSpec::Kubernetes {
                        namespace: ns.to_owned(),
                        name: name.to_owned(),
                    })
                }
                _ => Err(unsupported(
                    "kubernetes: needs NAMESPACE/NAME of a ConfigMap (lower-case DNS names), \
                     e.g. kubernetes:kube-system/sshbridge-migration",
                )),
            };
        }
        Err(unsupported(
            "write kubernetes:NAMESPACE/NAME (the Kubernetes API; required when several \
             bridges serve one control plane) or file:PATH (one bridge), e.g. \
             file:/var/lib/sshbridge/migration.json",
        ))
    }
}

/// An RFC 1123 label: a namespace.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain: a ConfigMap's name.
fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

/// Open the file store a `[migration] store` string names (`file:PATH`),
/// locked for this process. A `kubernetes:` store needs the API client:
/// `sshbridge_kubeapi::record::KubeStore` opens it.
pub fn open_store(spec: &str) -> Result<FileStore, StoreError> {
    match StoreSpec::parse(spec)? {
        StoreSpec::File(path) => {
            let mut store = FileStore::new(path);
            store.lock()?;
            Ok(store)
        }
        StoreSpec::Kubernetes { .. } => Err(StoreError::Unsupported {
            spec: spec.to_owned(),
            why: "this build's daemon does not open kubernetes: stores yet (the record and \
                  leader election exist as libraries, see docs/migration.md); the migration is \
                  unavailable while the bridge serves egress. Use file:PATH on a single bridge"
                .into(),
        }),
    }
}

/// The document every store writes: the state as compact JSON.
pub fn encode(state: &MigrationState) -> Vec<u8> {
    serde_json::to_vec(state).expect("the state serializes")
}

/// Why a stored document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, no schema, an unknown old schema, or a bad field.
    #[error("{0}")]
    Corrupt(String),
    /// Written by a newer sshbridge.
    #[error("schema {0} is newer than the {SCHEMA} this sshbridge reads")]
    Newer(u64),
}

/// Reads a document [`encode`] (or an older pretty-printed file) wrote.
pub fn decode(bytes: &[u8]) -> Result<MigrationState, DecodeError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| DecodeError::Corrupt(format!("not valid JSON: {e}")))?;
    let found = value
        .get("schema")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| DecodeError::Corrupt("no numeric \"schema\" field".into()))?;
    if found > u64::from(SCHEMA) {
        return Err(DecodeError::Newer(found));
    }
    if found < u64::from(SCHEMA) {
        return Err(DecodeError::Corrupt(format!("unknown old schema {found}")));
    }
    serde_json::from_value(value).map_err(|e| DecodeError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests;
