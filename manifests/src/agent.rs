//! The Konnectivity agent: a ServiceAccount and a DaemonSet with one agent
//! per node, announcing the node's name and IP (downward API) as its
//! identifiers, so the bridge routes that node's traffic to it.
//!
//! With `[konnectivity] identity = "proven"` (the default) each agent
//! presents its own node's credential: the kubelet's client certificate
//! (`/var/lib/kubelet/pki/kubelet-client-current.pem`, CN
//! `system:node:NAME`, cert and key in one file), mounted read-only from
//! the host. The file is root's and mode 0600, so that agent runs as uid 0
//! with every capability dropped and a read-only root filesystem. With
//! `identity = "claimed"` all agents share one client certificate from the
//! Secret.

use sshbridge_config::{AgentIdentity, Config};

use super::{header, quote, ManifestError, DEFAULT_IMAGE};

/// Where agents mount their certificates (from the Secret).
const CERT_DIR: &str = "/etc/konnectivity-agent";
/// The Secret the operator creates with the agents' certificates.
const SECRET: &str = "konnectivity-agent-certs";
/// Where the kubelet keeps its rotating client certificate and key.
const KUBELET_PKI: &str = "/var/lib/kubelet/pki";
/// The current kubelet client certificate and key (one PEM file).
const KUBELET_CLIENT: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";
/// Upstream proxy-agent's default health port (`--health-server-port`).
const UPSTREAM_HEALTH_PORT: u16 = 8093;

/// Which agent program the image holds, which decides its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStyle {
    /// `sshbridge agent` (`--server`, `--identifiers`, `--cert`).
    Sshbridge,
    /// Upstream apiserver-network-proxy's `proxy-agent`
    /// (`--proxy-server-host`, `--agent-identifiers`, `--agent-cert`).
    Upstream,
}

impl AgentStyle {
    /// Upstream when the image is apiserver-network-proxy's agent (its name
    /// holds `proxy-agent`), else sshbridge.
    pub fn of_image(image: &str) -> Self {
        let name = image.rsplit('/').next().unwrap_or(image);
        if name.contains("proxy-agent") {
            AgentStyle::Upstream
        } else {
            AgentStyle::Sshbridge
        }
    }
}

/// Flags of `manifests konnectivity-agent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentOptions {
    /// `--image`: default [`DEFAULT_IMAGE`].
    pub image: Option<String>,
    /// `--server-address HOST`: what agents dial; default the IP of
    /// `konnectivity.agent_listen` unless that is unspecified.
    pub server_address: Option<String>,
    /// `--namespace`.
    pub namespace: String,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            image: None,
            server_address: None,
            namespace: "kube-system".into(),
        }
    }
}

/// The ServiceAccount and DaemonSet of the agents for `cfg`'s
/// `[konnectivity]` server.
pub fn konnectivity_agent(cfg: &Config, opts: &AgentOptions) -> Result<String, ManifestError> {
    let k = cfg
        .konnectivity
        .as_ref()
        .ok_or_else(|| ManifestError::NoKonnectivity {
            config: cfg.source.clone(),
        })?;
    let host = match &opts.server_address {
        Some(h) => h.clone(),
        None if k.agent_listen.ip().is_unspecified() => {
            return Err(ManifestError::NoServerAddress {
                config: cfg.source.clone(),
                listen: k.agent_listen,
            })
        }
        None => k.agent_listen.ip().to_string(),
    };
    let port = k.agent_listen.port();
    let image = opts.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into());
    let style = AgentStyle::of_image(&image);
    let mtls = k.client_ca.is_some();
    let per_node = k.identity == AgentIdentity::Proven;
    let ns = quote(&opts.namespace);
    let identifiers = "host=$(NODE_NAME)&ipv4=$(HOST_IP)";
    let (command, mut args) = match style {
        AgentStyle::Sshbridge => (
            r#"["sshbridge", "agent"]"#,
            vec![
                format!("--server={}", host_port(&host, port)),
                format!("--ca-cert={CERT_DIR}/ca.crt"),
                "--agent-id=$(NODE_NAME)".to_string(),
                format!("--identifiers={identifiers}"),
            ],
        ),
        AgentStyle::Upstream => (
            r#"["/proxy-agent"]"#,
            vec![
                "--logtostderr=true".to_string(),
                format!("--proxy-server-host={host}"),
                format!("--proxy-server-port={port}"),
                format!("--ca-cert={CERT_DIR}/ca.crt"),
                format!("--agent-identifiers={identifiers}"),
                format!("--health-server-port={UPSTREAM_HEALTH_PORT}"),
            ],
        ),
    };
    let (cert, key) = match style {
        AgentStyle::Sshbridge => ("--cert", "--key"),
        AgentStyle::Upstream => ("--agent-cert", "--agent-key"),
    };
    if per_node {
        args.push(format!("{cert}={KUBELET_CLIENT}"));
        args.push(format!("{key}={KUBELET_CLIENT}"));
    } else if mtls {
        args.push(format!("{cert}={CERT_DIR}/tls.crt"));
        args.push(format!("{key}={CERT_DIR}/tls.key"));
    }
    let args: String = args
        .iter()
        .map(|a| format!("        - {}\n", quote(a)))
        .collect();
    let probe = match style {
        AgentStyle::Upstream => format!(
            "        livenessProbe:\n\
             \x20         httpGet:\n\
             \x20           path: /healthz\n\
             \x20           port: {UPSTREAM_HEALTH_PORT}\n\
             \x20         initialDelaySeconds: 15\n\
             \x20         timeoutSeconds: 15\n"
        ),
        AgentStyle::Sshbridge => "        # No probe: `sshbridge agent` serves no health port; it \
                                  reconnects by itself and\n        # the bridge's /report shows \
                                  each node's agents.\n"
            .to_string(),
    };
    let files = if per_node {
        "ca.crt (the CA that signed konnectivity.cert); each agent presents its node's own \
         kubelet client certificate, which konnectivity.client_ca must have signed"
    } else if mtls {
        "ca.crt (the CA that signed konnectivity.cert), tls.crt and tls.key (a client \
         certificate signed by konnectivity.client_ca)"
    } else {
        "ca.crt (the CA that signed konnectivity.cert)"
    };
    let create = if mtls && !per_node {
        format!(
            "#   kubectl -n {} create secret generic {SECRET} \\\n\
             #     --from-file=ca.crt=SERVER_CA --from-file=tls.crt=AGENT_CERT --from-file=tls.key=AGENT_KEY\n",
            opts.namespace
        )
    } else {
        format!(
            "#   kubectl -n {} create secret generic {SECRET} --from-file=ca.crt=SERVER_CA\n",
            opts.namespace
        )
    };
    // The kubelet's key is root's, mode 0600: reading it needs uid 0 (no
    // capability), so the per-node form runs as root with none.
    let (pod_security, kubelet_mount, kubelet_volume) = if per_node {
        (
            "        # Root only to read the node's kubelet client key (mode 0600); no\n\
             \x20       # capabilities, read-only root filesystem, no privilege escalation.\n\
             \x20       runAsUser: 0\n\
             \x20       runAsGroup: 0\n"
                .to_string(),
            format!(
                "        - name: kubelet-pki\n\
                 \x20         mountPath: {pki}\n\
                 \x20         readOnly: true\n",
                pki = quote(KUBELET_PKI)
            ),
            format!(
                "      - name: kubelet-pki\n\
                 \x20       hostPath:\n\
                 \x20         path: {pki}\n\
                 \x20         type: Directory\n",
                pki = quote(KUBELET_PKI)
            ),
        )
    } else {
        (
            "        runAsNonRoot: true\n\
             \x20       runAsUser: 65534\n\
             \x20       runAsGroup: 65534\n\
             \x20       fsGroup: 65534\n"
                .to_string(),
            String::new(),
            String::new(),
        )
    };
    let mut out = header(
        &format!(
            "Konnectivity agents, one per node, dialing bridge {:?} at {} over TLS.",
            cfg.bridge.id,
            host_port(&host, port)
        ),
        &cfg.source,
    );
    out.push_str(&format!(
        "# Create the Secret {SECRET} first, holding {files}:\n{create}"
    ));
    out.push_str(&format!(
        "apiVersion: v1
kind: ServiceAccount
metadata:
  name: konnectivity-agent
  namespace: {ns}
  labels:
    app.kubernetes.io/name: konnectivity-agent
    app.kubernetes.io/part-of: sshbridge
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: konnectivity-agent
  namespace: {ns}
  labels:
    app.kubernetes.io/name: konnectivity-agent
    app.kubernetes.io/part-of: sshbridge
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: konnectivity-agent
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      # Make before break: a node's new agent connects before the old one goes.
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        app.kubernetes.io/name: konnectivity-agent
        app.kubernetes.io/part-of: sshbridge
    spec:
      serviceAccountName: konnectivity-agent
      priorityClassName: system-node-critical
      nodeSelector:
        kubernetes.io/os: linux
      tolerations:
      - operator: Exists
      securityContext:
{pod_security}      containers:
      - name: konnectivity-agent
        image: {image}
        command: {command}
        args:
{args}        env:
        - name: NODE_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        - name: HOST_IP
          valueFrom:
            fieldRef:
              fieldPath: status.hostIP
{probe}        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: [\"ALL\"]
        resources:
          requests:
            cpu: 10m
            memory: 32Mi
        volumeMounts:
        - name: certs
          mountPath: {cert_dir}
          readOnly: true
{kubelet_mount}      volumes:
      - name: certs
        secret:
          secretName: {SECRET}
          defaultMode: 288 # 0440, decimal so every YAML parser reads it the same
{kubelet_volume}",
        image = quote(&image),
        cert_dir = quote(CERT_DIR),
    ));
    Ok(out)
}

/// `host:port`, with an IPv6 literal in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
