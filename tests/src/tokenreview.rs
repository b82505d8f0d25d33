//! Service account tokens for agents of a bridge with
//! `[konnectivity] agent_auth = "tokenreview"`: the objects a real
//! kube-apiserver needs to issue them (namespace, ServiceAccount, the
//! agent's Pod bound to a node), tokens minted with the TokenRequest API
//! (`POST .../serviceaccounts/NAME/token`, bound to the pod, for an
//! audience), agents that present them (`sshbridge agent` and upstream's
//! `proxy-agent`, both with `--service-account-token-path`), and the
//! refusals the bridge counts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use crate::apiserver::ControlPlane;
use crate::upstream::Upstream;
use crate::{Agent, AgentSpec, Bridge, Cluster, KonnectivityConfig, Node};

/// Validity asked of minted tokens (the API's minimum is 10 minutes).
const TOKEN_SECONDS: u64 = 3600;

/// `[konnectivity] agent_auth = "tokenreview"` with `audiences` and the
/// allow-list `service_accounts`, and `[kubernetes]` reaching `cp` with its
/// admin kubeconfig, as [`KonnectivityConfig::extra`].
pub fn tokenreview_toml(
    cp: &ControlPlane,
    audiences: &[&str],
    service_accounts: &[&str],
) -> String {
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "agent_auth = \"tokenreview\"\n\n[konnectivity.tokenreview]\naudiences = [{}]\n\
         service_accounts = [{}]\ncache_ttl = \"10s\"\n\n[kubernetes]\nkubeconfig = {:?}\n",
        list(audiences),
        list(service_accounts),
        cp.kubeconfig().display().to_string()
    )
}

/// An egress selector file that sends the apiserver's own traffic direct:
/// for control planes that only answer the bridge's TokenReviews.
pub fn direct_egress(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("egress-direct.yaml");
    std::fs::write(
        &path,
        "apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\n\
         egressSelections:\n- name: cluster\n  connection:\n    proxyProtocol: Direct\n",
    )?;
    Ok(path)
}

impl ControlPlane {
    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let r = self
            .api
            .request("POST", path, Some(("application/json", &body.to_string())))
            .await?;
        anyhow::ensure!(
            (200..300).contains(&r.status),
            "POST {path}: {} {}",
            r.status,
            r.body
        );
        serde_json::from_str(&r.body).with_context(|| format!("POST {path}: {}", r.body))
    }

    /// Namespace `ns` and ServiceAccount `ns/name` (creates the namespace
    /// unless it exists; the harness runs without the ServiceAccount
    /// admission plugin and controllers, so nothing else makes them).
    pub async fn create_service_account(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let r = self
            .api
            .request(
                "POST",
                "/api/v1/namespaces",
                Some(("application/json", &namespace.to_string())),
            )
            .await?;
        anyhow::ensure!(
            (200..300).contains(&r.status) || r.status == 409,
            "creating namespace {ns}: {} {}",
            r.status,
            r.body
        );
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}});
        self.post(&format!("/api/v1/namespaces/{ns}/serviceaccounts"), sa)
            .await?;
        Ok(())
    }

    /// Pod `ns/name` of service account `sa`, scheduled to `node` (as the
    /// agent DaemonSet's pod on that node); returns its uid.
    pub async fn create_agent_pod(
        &self,
        ns: &str,
        name: &str,
        node: &str,
        sa: &str,
    ) -> anyhow::Result<String> {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "serviceAccountName": sa,
                     "containers": [{"name": "agent", "image": "e2e"}]},
        });
        let created = self
            .post(&format!("/api/v1/namespaces/{ns}/pods"), pod)
            .await?;
        created["metadata"]["uid"]
            .as_str()
            .map(str::to_string)
            .context("created pod has no uid")
    }

    /// A token of service account `ns/sa` for `audience`, bound to pod
    /// `ns/pod` (uid `uid`), from the TokenRequest API: what the kubelet
    /// projects into the agent's pod.
    pub async fn request_token(
        &self,
        ns: &str,
        sa: &str,
        audience: &str,
        (pod, uid): (&str, &str),
    ) -> anyhow::Result<String> {
        let request = json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": TOKEN_SECONDS,
                     "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": uid}},
        });
        let answer = self
            .post(
                &format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"),
                request,
            )
            .await?;
        answer["status"]["token"]
            .as_str()
            .map(str::to_string)
            .context("TokenRequest answered without status.token")
    }
}

impl Cluster {
    /// `sshbridge agent` `id` for `node` claiming `identifiers`, with no
    /// client certificate and `token` in its token file (its log and token
    /// under `tokens/` of the cluster's directory).
    pub async fn start_token_agent(
        &self,
        k: &KonnectivityConfig,
        node: &Node,
        id: &str,
        identifiers: &str,
        token: &str,
    ) -> anyhow::Result<Agent> {
        let dir = self.dir.path().join("tokens");
        std::fs::create_dir_all(&dir)?;
        let token_file = dir.join(format!("{id}.token"));
        std::fs::write(&token_file, token)?;
        let mut spec = AgentSpec::for_node(k, &node.name, node.address, dir);
        spec.identity = None;
        spec.agent_id = id.to_string();
        spec.identifiers = identifiers.to_string();
        spec.token_file = Some(token_file);
        Agent::start(spec).await
    }

    /// Upstream's `proxy-agent` (from `anp`) for `node` against the bridge
    /// of `k`, without a client certificate, with `token` given by
    /// `--service-account-token-path`.
    pub fn start_upstream_token_agent(
        &self,
        anp: &Path,
        k: &KonnectivityConfig,
        node: &Node,
        token: &str,
    ) -> anyhow::Result<Upstream> {
        let dir = self
            .dir
            .path()
            .join(format!("anp-token-agent-{}", node.name));
        std::fs::create_dir_all(&dir)?;
        let token_file = dir.join("token");
        std::fs::write(&token_file, token)?;
        let lo = std::net::IpAddr::from([127, 0, 0, 1]);
        let args = vec![
            format!("--proxy-server-host={}", k.agent_listen.ip()),
            format!("--proxy-server-port={}", k.agent_listen.port()),
            format!("--ca-cert={}", k.agent_ca.display()),
            format!("--service-account-token-path={}", token_file.display()),
            format!("--agent-id=anp-{}", node.name),
            format!(
                "--agent-identifiers=host={}&ipv4={}",
                node.name, node.address
            ),
            "--health-server-host=127.0.0.1".into(),
            format!("--health-server-port={}", crate::net::free_port(lo)?),
            "--admin-bind-address=127.0.0.1".into(),
            format!("--admin-server-port={}", crate::net::free_port(lo)?),
            "--sync-interval=100ms".into(),
            "--sync-interval-cap=1s".into(),
            "-v=3".into(),
        ];
        Upstream::start(
            &format!("proxy-agent {} (token)", node.name),
            anp.join("proxy-agent"),
            args,
            dir.join("proxy-agent.log"),
        )
    }
}

/// `sshbridge_konnectivity_agents_refused_total{reason}` from `/metrics`.
pub async fn refused(bridge: &Bridge, reason: &str) -> anyhow::Result<u64> {
    let metrics = bridge.admin_get("/metrics").await?.body;
    let series = format!("sshbridge_konnectivity_agents_refused_total{{reason=\"{reason}\"}} ");
    Ok(metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Waits up to `within` until the bridge counted more than `before`
/// refusals for `reason` and `agent`'s log shows the refusal saying `says`.
pub async fn wait_refused(
    bridge: &Bridge,
    agent: &Agent,
    (reason, before): (&str, u64),
    says: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let wait = async {
        loop {
            if refused(bridge, reason).await? > before && agent.log().contains(says) {
                return Ok::<_, anyhow::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(within, wait).await.map_err(|_| {
        anyhow::anyhow!(
            "no refusal {reason:?} saying {says:?} for {}; agent log:\n{}\nbridge log:\n{}",
            agent.spec.agent_id,
            agent.log_tail(20),
            bridge.log_tail(20)
        )
    })?
}
