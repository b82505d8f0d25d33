//! The migration record of a highly available control plane: one ConfigMap
//! (`[migration] store = "kubernetes:NAMESPACE/NAME"`) that every bridge
//! reads and the leader writes, with optimistic concurrency.
//!
//! The state ([`sshbridge_migrate::encode`]) is gzipped into
//! `binaryData["migration.json.gz"]`: 5,000 migrated nodes take about 4.3
//! MB as JSON but about 0.36 MB compressed, well under a ConfigMap's 1 MiB
//! (docs/migration.md, "High availability").
//!
//! Every write names the `resourceVersion` this store last read or wrote;
//! the apiserver refuses it with 409 Conflict when anyone wrote in between,
//! and the store reports [`StoreError::Conflict`], never retrying: the
//! caller reads again and decides. A record that was deleted, or that holds
//! something this build cannot read, is refused and never overwritten.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use sshbridge_migrate::{decode, encode, DecodeError, MigrationState, Store, StoreError};

/// The key of the gzipped state in the ConfigMap's `binaryData`.
pub const DATA_KEY: &str = "migration.json.gz";
/// The label that marks the ConfigMap as sshbridge's.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "sshbridge");
/// Bound on one API call; a bridge cut off from the apiserver gets an
/// error, not a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest state accepted when decompressing (a gzip bomb is refused).
const MAX_JSON: u64 = 64 * 1024 * 1024;

/// What this store last saw of the object.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// Absent (or never read): a save creates it, and fails if it exists.
    Absent,
    /// This `resourceVersion`: a save replaces exactly that version.
    Version(String),
}

/// The migration record in a ConfigMap.
#[derive(Clone)]
pub struct KubeStore {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
    seen: Seen,
    /// The watch a follower waits on, once it waits.
    follow: Option<follow::Follow>,
}

impl KubeStore {
    /// The record `namespace/name`, through `client`. Nothing is read yet.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> KubeStore {
        KubeStore {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            seen: Seen::Absent,
            follow: None,
        }
    }

    /// `configmap NAMESPACE/NAME`, as errors name it.
    pub fn object(&self) -> String {
        format!("configmap {}/{}", self.namespace, self.name)
    }

    /// The `resourceVersion` last read or written, if any.
    pub fn resource_version(&self) -> Option<&str> {
        match &self.seen {
            Seen::Version(v) => Some(v),
            Seen::Absent => None,
        }
    }

    fn api_error(
        &self,
        op: &'static str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::Api {
            object: self.object(),
            op,
            source: Box::new(e),
        }
    }

    fn corrupt(&self, problem: impl Into<String>) -> StoreError {
        StoreError::RecordCorrupt {
            object: self.object(),
            problem: problem.into(),
        }
    }

    async fn call<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, StoreError> {
        tokio::time::timeout(CALL_TIMEOUT, f)
            .await
            .map_err(|_| StoreError::Api {
                object: self.object(),
                op,
                source: format!("the Kubernetes API did not answer within {CALL_TIMEOUT:?}").into(),
            })
    }

    /// The state in `cm`, or why it is refused.
    fn state_of(&self, cm: &ConfigMap) -> Result<MigrationState, StoreError> {
        let managed = cm
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY.0))
            .is_some_and(|v| v == MANAGED_BY.1);
        let Some(gz) = cm.binary_data.as_ref().and_then(|d| d.get(DATA_KEY)) else {
            return Err(self.corrupt(format!(
                "no binaryData key {DATA_KEY}{}",
                if managed { "" } else { ", and no label app.kubernetes.io/managed-by=sshbridge: it is not an sshbridge migration record" }
            )));
        };
        let mut json = Vec::new();
        GzDecoder::new(&gz.0[..])
            .take(MAX_JSON + 1)
            .read_to_end(&mut json)
            .map_err(|e| self.corrupt(format!("{DATA_KEY} is not gzip: {e}")))?;
        if json.len() as u64 > MAX_JSON {
            return Err(self.corrupt(format!("{DATA_KEY} inflates to over {MAX_JSON} bytes")));
        }
        decode(&json).map_err(|e| match e {
            DecodeError::Newer(_) => {
                self.corrupt(format!("{e}; run the sshbridge version that wrote it"))
            }
            DecodeError::Corrupt(p) => self.corrupt(p),
        })
    }

    /// The ConfigMap that holds `state`, at the version last seen.
    fn object_of(&self, state: &MigrationState) -> Result<ConfigMap, StoreError> {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&encode(state))
            .map_err(|e| self.api_error("compress the state", e))?;
        let bytes = gz
            .finish()
            .map_err(|e| self.api_error("compress the state", e))?;
        Ok(ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(MANAGED_BY.0.into(), MANAGED_BY.1.into())])),
                resource_version: self.resource_version().map(str::to_owned),
                ..ObjectMeta::default()
            },
            binary_data: Some(BTreeMap::from([(DATA_KEY.into(), ByteString(bytes))])),
            ..ConfigMap::default()
        })
    }
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(r) => Some(r.code),
        _ => None,
    }
}

impl Store for KubeStore {
    async fn load(&mut self) -> Result<Option<MigrationState>, StoreError> {
        let got = self.call("read it", self.api.get_opt(&self.name)).await?;
        let cm = got.map_err(|e| self.api_error("read it", e))?;
        let Some(cm) = cm else {
            self.seen = Seen::Absent;
            return Ok(None);
        };
        let state = self.state_of(&cm)?;
        self.seen = Seen::Version(cm.metadata.resource_version.clone().unwrap_or_default());
        Ok(Some(state))
    }

    async fn save(&mut self, state: &MigrationState) -> Result<(), StoreError> {
        let cm = self.object_of(state)?;
        let pp = PostParams::default();
        let written = match &self.seen {
            Seen::Absent => self.call("create it", self.api.create(&pp, &cm)).await?,
            Seen::Version(_) => {
                self.call("replace it", self.api.replace(&self.name, &pp, &cm))
                    .await?
            }
        };
        match written {
            Ok(cm) => {
                self.seen = Seen::Version(cm.metadata.resource_version.unwrap_or_default());
                Ok(())
            }
            Err(e) if code(&e) == Some(409) => Err(StoreError::Conflict {
                object: self.object(),
                seen: match &self.seen {
                    Seen::Absent => "it did not exist".into(),
                    Seen::Version(v) => format!("resourceVersion {v}"),
                },
            }),
            Err(e) if code(&e) == Some(404) && self.seen != Seen::Absent => {
                Err(StoreError::Deleted {
                    object: self.object(),
                })
            }
            Err(e) => Err(self.api_error("write it", e)),
        }
    }

    fn describe(&self) -> String {
        format!("kubernetes:{}/{}", self.namespace, self.name)
    }

    async fn changed(&mut self) {
        if self.follow.is_none() {
            self.follow = Some(follow::Follow::start(
                self.api.clone(),
                &self.name,
                self.object(),
            ));
        }
        if let Some(f) = self.follow.as_mut() {
            f.changed().await;
        }
    }
}

mod follow;
#[cfg(test)]
mod tests;
