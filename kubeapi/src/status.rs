//! Per-bridge status objects (`[ha] status = "kubernetes:NAMESPACE"`): one
//! ConfigMap per bridge, named after its `[bridge] id` and labelled
//! [`LABEL`], holding what that bridge's probers see of each node. Each
//! bridge writes only its own object, with its own `resourceVersion`, and
//! lists everyone's. What the nodes' document says is the daemon's
//! business: this module moves an opaque JSON text.
//!
//! Why a ConfigMap: it is in every cluster (no CustomResourceDefinition to
//! install first), `kubectl get cm -l sshbridge.io/bridge-status` shows the
//! whole control plane, and its 1 MiB limit holds 5,000 nodes at under
//! 200 bytes each. A Lease has no room for per-node data.
//!
//! The bridge's credentials need `get`, `create`, `update` and `list` on
//! `configmaps` in that namespace.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

/// Label every status object carries (value `"true"`), to list them.
pub const LABEL: &str = "sshbridge.io/bridge-status";
/// Prefix of the objects' names.
pub const NAME_PREFIX: &str = "sshbridge-status-";
/// Data key: the bridge's id as configured.
const KEY_BRIDGE: &str = "bridge";
/// Data key: the publisher's interval, in milliseconds.
const KEY_INTERVAL: &str = "interval_ms";
/// Data key: when it was written, milliseconds since the Unix epoch
/// (publisher's clock; readers use it only at first sight).
const KEY_PUBLISHED: &str = "published_ms";
/// Data key: the nodes' document.
const KEY_NODES: &str = "nodes.json";

/// One bridge's status object as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusObject {
    /// The bridge's `[bridge] id`.
    pub bridge: String,
    /// How often it publishes.
    pub interval: Duration,
    /// When it last wrote, by its own clock.
    pub published: SystemTime,
    /// The nodes' document (JSON), as written.
    pub nodes: String,
    /// The object's `resourceVersion`: changes with every write.
    pub resource_version: String,
}

/// Why a status object could not be written or listed: names the object
/// and the likely fix.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The apiserver refused or could not be reached.
    #[error("{what} configmap {namespace}/{name}: {source}; check [kubernetes] and that the bridge may get, create, update and list configmaps in {namespace}")]
    Api {
        /// `write` or `list`.
        what: &'static str,
        /// The namespace.
        namespace: String,
        /// The object (or `-l sshbridge.io/bridge-status` for a list).
        name: String,
        /// kube-rs's error.
        #[source]
        source: kube::Error,
    },
}

/// The object name of `bridge`: [`NAME_PREFIX`] and the id, lower-cased,
/// every character a name cannot hold turned into `-`, cut to 253.
pub fn object_name(bridge: &str) -> String {
    let id: String = bridge
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let mut name = format!("{NAME_PREFIX}{}", id.trim_matches(['-', '.']));
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_owned()
}

/// Writes one bridge's object, keeping its `resourceVersion` between
/// writes so that each write replaces exactly the version it read.
pub struct Publisher {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
    bridge: String,
    resource_version: Option<String>,
}

impl Publisher {
    /// The publisher of `bridge`'s object in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, bridge: &str) -> Publisher {
        Publisher {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: object_name(bridge),
            bridge: bridge.to_owned(),
            resource_version: None,
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes `nodes` (and the heartbeat) now: a replace at the version
    /// last written, or a create when there is none. A conflict (someone
    /// else wrote it, or our version is stale) re-reads the version and
    /// replaces once more. Returns the bytes of the object's data.
    pub async fn publish(&mut self, interval: Duration, nodes: &str) -> Result<usize, StatusError> {
        let mut object = self.object(interval, nodes);
        let bytes = object
            .data
            .as_ref()
            .map_or(0, |d| d.iter().map(|(k, v)| k.len() + v.len()).sum());
        let mut retried = false;
        loop {
            if self.resource_version.is_none() {
                self.resource_version = self.read_version().await?;
            }
            object.metadata.resource_version = self.resource_version.clone();
            let pp = PostParams::default();
            let written = match &self.resource_version {
                None => self.api.create(&pp, &object).await,
                Some(_) => self.api.replace(&self.name, &pp, &object).await,
            };
            match written {
                Ok(done) => {
                    self.resource_version = done.metadata.resource_version;
                    return Ok(bytes);
                }
                Err(kube::Error::Api(s)) if (s.code == 409 || s.code == 404) && !retried => {
                    self.resource_version = None;
                    retried = true;
                }
                Err(source) => {
                    self.resource_version = None;
                    return Err(self.error("write", source));
                }
            }
        }
    }

    async fn read_version(&self) -> Result<Option<String>, StatusError> {
        match self.api.get_opt(&self.name).await {
            Ok(found) => Ok(found.and_then(|o| o.metadata.resource_version)),
            Err(source) => Err(self.error("write", source)),
        }
    }

    fn error(&self, what: &'static str, source: kube::Error) -> StatusError {
        StatusError::Api {
            what,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    fn object(&self, interval: Duration, nodes: &str) -> ConfigMap {
        let published = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let data = BTreeMap::from([
            (KEY_BRIDGE.to_owned(), self.bridge.clone()),
            (KEY_INTERVAL.to_owned(), interval.as_millis().to_string()),
            (KEY_PUBLISHED.to_owned(), published.to_string()),
            (KEY_NODES.to_owned(), nodes.to_owned()),
        ]);
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(LABEL.to_owned(), "true".to_owned())])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        }
    }
}

/// Every bridge's status object in `namespace`. Objects that lack a field
/// (written by hand, or by a later version) are skipped with a warning.
pub async fn list(client: kube::Client, namespace: &str) -> Result<Vec<StatusObject>, StatusError> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let listed = api
        .list(&ListParams::default().labels(&format!("{LABEL}=true")))
        .await
        .map_err(|source| StatusError::Api {
            what: "list",
            namespace: namespace.to_owned(),
            name: format!("-l {LABEL}"),
            source,
        })?;
    Ok(listed.items.into_iter().filter_map(parse).collect())
}

fn parse(cm: ConfigMap) -> Option<StatusObject> {
    let name = cm.metadata.name.clone().unwrap_or_default();
    let resource_version = cm.metadata.resource_version.clone().unwrap_or_default();
    let mut data = cm.data.unwrap_or_default();
    let ms = |v: Option<String>| v.and_then(|v| v.parse::<u64>().ok());
    let parsed = (|| {
        Some(StatusObject {
            bridge: data.remove(KEY_BRIDGE)?,
            interval: Duration::from_millis(ms(data.remove(KEY_INTERVAL))?),
            published: UNIX_EPOCH + Duration::from_millis(ms(data.remove(KEY_PUBLISHED))?),
            nodes: data.remove(KEY_NODES)?,
            resource_version,
        })
    })();
    if parsed.is_none() {
        tracing::warn!(configmap = %name, "bridge status object without bridge, interval_ms, published_ms or nodes.json; skipped");
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_valid_and_stable() {
        assert_eq!(object_name("cp-1"), "sshbridge-status-cp-1");
        assert_eq!(object_name("CP_1.example"), "sshbridge-status-cp-1.example");
        assert_eq!(object_name("-x-"), "sshbridge-status-x");
        assert!(object_name(&"a".repeat(400)).len() <= 253);
    }

    #[test]
    fn an_object_missing_a_field_is_skipped() {
        let full = ConfigMap {
            data: Some(BTreeMap::from([
                ("bridge".to_owned(), "cp-2".to_owned()),
                ("interval_ms".to_owned(), "5000".to_owned()),
                ("published_ms".to_owned(), "1000".to_owned()),
                ("nodes.json".to_owned(), "{}".to_owned()),
            ])),
            ..ConfigMap::default()
        };
        let got = parse(full.clone()).expect("parses");
        assert_eq!(got.bridge, "cp-2");
        assert_eq!(got.interval, Duration::from_secs(5));
        let mut partial = full;
        partial.data.as_mut().unwrap().remove("interval_ms");
        assert_eq!(parse(partial), None);
    }
}
