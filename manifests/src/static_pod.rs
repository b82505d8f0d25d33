//! A static Pod (for `/etc/kubernetes/manifests`) running `sshbridge run`
//! on a control-plane host, next to kube-apiserver.

use std::time::Duration;

use sshbridge_config::{Config, Listen};

use super::mounts::{dirs, volume_name};
use super::{for_version, header, quote, quote_path, KubeVersion, DEFAULT_IMAGE};

/// Flags of `manifests static-pod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPodOptions {
    /// `--image`: default [`DEFAULT_IMAGE`].
    pub image: Option<String>,
    /// `--drain-timeout` given to `sshbridge run`; the Pod's grace period
    /// is longer, so a drain is never cut by the kubelet.
    pub drain_timeout: Duration,
    /// `--kubernetes-version`: the cluster's release.
    pub kubernetes: KubeVersion,
}

impl Default for StaticPodOptions {
    fn default() -> Self {
        StaticPodOptions {
            image: None,
            drain_timeout: Duration::from_secs(25),
            kubernetes: KubeVersion::NEWEST,
        }
    }
}

/// The static Pod manifest for `cfg`.
pub fn static_pod(cfg: &Config, opts: &StaticPodOptions) -> String {
    let image = opts.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into());
    let drain = opts.drain_timeout.as_secs().max(1);
    let command = [
        "sshbridge".to_string(),
        "run".into(),
        "--config".into(),
        cfg.source.display().to_string(),
        "--drain-timeout".into(),
        format!("{drain}s"),
    ];
    let command: Vec<String> = command.iter().map(|c| quote(c)).collect();
    let mut mounts = String::new();
    let mut volumes = String::new();
    let mut taken = Vec::new();
    for d in dirs(cfg) {
        let name = volume_name(&d.path, &taken);
        mounts.push_str(&format!(
            "    - name: {name}\n      mountPath: {}\n      readOnly: {}\n",
            quote_path(&d.path),
            !d.writable
        ));
        volumes.push_str(&format!(
            "  - name: {name}\n    hostPath:\n      path: {}\n      type: {}\n",
            quote_path(&d.path),
            if d.writable {
                "DirectoryOrCreate"
            } else {
                "Directory"
            }
        ));
        taken.push(name);
    }
    let mut out = header(
        &format!(
            "Static Pod running sshbridge {:?} on this control-plane host; \
             copy it to /etc/kubernetes/manifests/.",
            cfg.bridge.id
        ),
        &cfg.source,
    );
    // No field of this Pod differs across the support range.
    out.push_str(&for_version(opts.kubernetes, &[]));
    out.push_str(&format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: sshbridge
  namespace: kube-system
  labels:
    app.kubernetes.io/name: sshbridge
    component: sshbridge
    tier: control-plane
spec:
  # Host network: kube-apiserver reaches the egress sockets on the host and
  # agents dial konnectivity.agent_listen on the host's addresses.
  hostNetwork: true
  priorityClassName: system-node-critical
  # Longer than --drain-timeout, so open streams drain before a SIGKILL.
  terminationGracePeriodSeconds: {grace}
  containers:
  - name: sshbridge
    image: {image}
    command: [{command}]
{probes}    securityContext:
      # The image runs as uid 65532 by default; the bridge reads the host's
      # root-owned 0600 SSH key, TLS keys and migration store.
      runAsUser: 0
      runAsGroup: 0
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities:
        drop: [\"ALL\"]
{caps}    resources:
      requests:
        cpu: 50m
        memory: 64Mi
    volumeMounts:
{mounts}  volumes:
{volumes}",
        grace = drain + 10,
        image = quote(&image),
        command = command.join(", "),
        probes = probes(&cfg.admin.listen),
        caps = if needs_low_port(cfg) {
            "        add: [\"NET_BIND_SERVICE\"]\n"
        } else {
            ""
        },
    ));
    out
}

/// Liveness and readiness on the admin API when it listens on TCP.
fn probes(listen: &Listen) -> String {
    match listen {
        Listen::Tcp(addr) => {
            // With hostNetwork the kubelet probes the host; a wildcard
            // listener answers on the node IP, a specific one only there.
            let host = if addr.ip().is_unspecified() {
                String::new()
            } else {
                format!("        host: {}\n", quote(&addr.ip().to_string()))
            };
            let mut out = String::new();
            for (kind, path, period) in [("liveness", "/livez", 10), ("readiness", "/readyz", 5)] {
                out.push_str(&format!(
                    "    {kind}Probe:\n      httpGet:\n{host}        path: {path}\n        \
                     port: {port}\n        scheme: HTTP\n      periodSeconds: {period}\n      \
                     failureThreshold: 3\n",
                    port = addr.port()
                ));
            }
            out
        }
        Listen::Unix(path) => format!(
            "    # The admin API listens on {} (a unix socket), which the kubelet's\n    \
             # httpGet probes cannot reach, so liveness runs `sshbridge report` against it\n    \
             # and there is no readiness probe: a static Pod's readiness gates no traffic\n    \
             # (kube-apiserver dials the egress socket directly). Set [admin] listen to\n    \
             # \"127.0.0.1:PORT\" for httpGet probes on /livez and /readyz.\n    \
             livenessProbe:\n      exec:\n        command: [\"sshbridge\", \"report\", \"--admin\", {}, \"-o\", \"json\"]\n      \
             periodSeconds: 10\n      timeoutSeconds: 5\n      failureThreshold: 3\n",
            path.display(),
            quote(&format!("unix:{}", path.display()))
        ),
    }
}

/// Whether a listener of the config binds a port below 1024.
pub(crate) fn needs_low_port(cfg: &Config) -> bool {
    let admin = match &cfg.admin.listen {
        Listen::Tcp(a) => Some(a.port()),
        Listen::Unix(_) => None,
    };
    let egress = cfg
        .egress
        .http_connect_tcp
        .as_ref()
        .map(|t| t.listen.port());
    let agents = cfg.konnectivity.as_ref().map(|k| k.agent_listen.port());
    [admin, egress, agents]
        .into_iter()
        .flatten()
        .any(|p| p < 1024)
}
