//! A real control plane for interop tests: etcd and kube-apiserver v1.20.2
//! (binaries from `scripts/k8s-harness`) as child processes, the
//! apiserver's `cluster` egress on the bridge's socket in either proxy
//! protocol, kubectl with an admin kubeconfig, and the API calls that stand
//! in for kubelets registering (Node objects with their status) and the
//! scheduler (Pods bound to nodes).
//!
//! Each control plane listens on its own 127.x block; one CA (the
//! cluster's) signs the apiserver's serving certificate, the admin
//! certificate and the apiserver's kubelet client certificate.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sshbridge_sim::pki::Pki;
use tokio::process::{Child, Command};

use super::https::{ApiHttps, Response};
use crate::net;

/// Bound on etcd + apiserver becoming ready on a loaded 2-core machine.
const READY: Duration = Duration::from_secs(120);

/// The three programs, from `KUBE_APISERVER_BIN`, `KUBECTL_BIN`, `ETCD_BIN`.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// kube-apiserver v1.20.2.
    pub apiserver: PathBuf,
    /// kubectl v1.20.2.
    pub kubectl: PathBuf,
    /// etcd 3.4.
    pub etcd: PathBuf,
}

impl Binaries {
    /// The binaries named by the environment. Unset is an error, not a
    /// skip: `scripts/test` always provides them.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| -> anyhow::Result<PathBuf> {
            let path = std::env::var_os(name).map(PathBuf::from).with_context(|| {
                format!(
                    "{name} is not set: run `eval \"$(scripts/k8s-harness)\"` first (it builds \
                     kube-apiserver and kubectl v1.20.2 from Debian's kubernetes source package, \
                     installs etcd, and prints the variables); scripts/test does this"
                )
            })?;
            anyhow::ensure!(
                path.is_file(),
                "{name}={} does not exist: re-run scripts/k8s-harness",
                path.display()
            );
            Ok(path)
        };
        Ok(Binaries {
            apiserver: var("KUBE_APISERVER_BIN")?,
            kubectl: var("KUBECTL_BIN")?,
            etcd: var("ETCD_BIN")?,
        })
    }
}

/// The apiserver's `proxyProtocol` for the `cluster` egress selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// `HTTPConnect` over `[egress] http_connect_uds`.
    HttpConnect,
    /// `GRPC` over `[egress] grpc_uds`.
    Grpc,
}

/// Running etcd + kube-apiserver. Dropping it kills both.
pub struct ControlPlane {
    /// Raw HTTPS access as admin.
    pub api: ApiHttps,
    /// Holds config, certificates, data and logs.
    pub dir: PathBuf,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    /// Killed on drop (`kill_on_drop`).
    _etcd: Child,
    /// Killed on drop (`kill_on_drop`).
    _apiserver: Child,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver in `dir` with the `cluster` egress
    /// on `socket` in `protocol`, and waits for `/readyz`.
    pub async fn start(
        bins: &Binaries,
        pki: &Pki,
        ca: &Path,
        dir: &Path,
        protocol: ProxyProtocol,
        socket: &Path,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let block = net::block();
        let (etcd_ip, api_ip) = (net::host(block, 1), net::host(block, 2));
        let etcd_url = format!(
            "http://{}",
            SocketAddr::new(etcd_ip, net::free_port(etcd_ip)?)
        );
        let peer_url = format!(
            "http://{}",
            SocketAddr::new(etcd_ip, net::free_port(etcd_ip)?)
        );
        let etcd = spawn(
            Command::new(&bins.etcd)
                .arg("--name=e2e")
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=e2e={peer_url}")),
            &dir.join("etcd.log"),
        )?;

        let files = Files::write(pki, dir, api_ip, protocol, socket)?;
        let addr = SocketAddr::new(api_ip, net::free_port(api_ip)?);
        let apiserver = spawn(
            Command::new(&bins.apiserver).args(apiserver_flags(&files, ca, &etcd_url, addr)),
            &dir.join("kube-apiserver.log"),
        )?;
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(addr, ca, &files.admin))?;
        let cp = ControlPlane {
            api: ApiHttps {
                addr,
                tls: pki.client_config(Some(&files.admin_pair))?,
            },
            dir: dir.to_path_buf(),
            kubeconfig,
            kubectl: bins.kubectl.clone(),
            _etcd: etcd,
            _apiserver: apiserver,
        };
        cp.wait_ready().await?;
        Ok(cp)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < READY {
            match self.api.request("GET", "/readyz", None).await {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => last = format!("{} {}", r.status, r.body),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!(
            "kube-apiserver not ready within {READY:?} (last: {last}); log tail:\n{}",
            self.log_tail(40)
        )
    }

    /// The last `n` lines of the apiserver's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("kube-apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A kubectl command with the admin kubeconfig (output piped).
    pub fn kubectl_command(&self) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs kubectl with `args` to the end (bounded): (success, stdout, stderr).
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            self.kubectl_command().args(args).output(),
        )
        .await
        .with_context(|| format!("kubectl {args:?} did not end within 60s"))??;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Registers node `name` as a kubelet would: the Node object, then its
    /// status (InternalIP `ip`, kubelet port `port`) by a merge PATCH of
    /// the status subresource.
    pub async fn register_node(&self, name: &str, ip: IpAddr, port: u16) -> anyhow::Result<()> {
        let node = serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        });
        self.ok(
            "POST",
            "/api/v1/nodes",
            "application/json",
            &node.to_string(),
        )
        .await?;
        let status = serde_json::json!({"status": {
            "addresses": [{"type": "InternalIP", "address": ip.to_string()}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        }});
        let path = format!("/api/v1/nodes/{name}/status");
        self.ok(
            "PATCH",
            &path,
            "application/merge-patch+json",
            &status.to_string(),
        )
        .await
    }

    /// Creates pod `name` in `default`, bound to `node`, with one
    /// container `container`.
    pub async fn create_pod(&self, name: &str, node: &str, container: &str) -> anyhow::Result<()> {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": container, "image": "e2e"}]},
        });
        self.ok(
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            &pod.to_string(),
        )
        .await
    }

    async fn ok(&self, method: &str, path: &str, ctype: &str, body: &str) -> anyhow::Result<()> {
        let r: Response = self.api.request(method, path, Some((ctype, body))).await?;
        anyhow::ensure!(
            (200..300).contains(&r.status),
            "{method} {path}: {} {}",
            r.status,
            r.body
        );
        Ok(())
    }
}

/// The certificates and config files an apiserver reads.
struct Files {
    serving: (PathBuf, PathBuf),
    kubelet_client: (PathBuf, PathBuf),
    admin: (PathBuf, PathBuf),
    admin_pair: sshbridge_sim::pki::CertPair,
    sa_key: PathBuf,
    sa_pub: PathBuf,
    egress: PathBuf,
}

impl Files {
    fn write(
        pki: &Pki,
        dir: &Path,
        ip: IpAddr,
        protocol: ProxyProtocol,
        socket: &Path,
    ) -> anyhow::Result<Self> {
        let serving = pki
            .issue_server(&[ip], &["kubernetes", "localhost"])?
            .write_to(dir, "apiserver")?;
        let kubelet_client = pki
            .issue_client("kube-apiserver-kubelet-client")?
            .write_to(dir, "apiserver-kubelet-client")?;
        let admin_pair = pki.issue_client("e2e-admin")?;
        let admin = admin_pair.write_to(dir, "admin")?;
        // Service-account tokens: a signing key (PKCS#8) and its public
        // half (SPKI); the apiserver insists on both flags.
        let key = rcgen::KeyPair::generate()?;
        let (sa_key, sa_pub) = (dir.join("sa.key"), dir.join("sa.pub"));
        std::fs::write(&sa_key, key.serialize_pem())?;
        std::fs::write(&sa_pub, key.public_key_pem())?;
        let protocol = match protocol {
            ProxyProtocol::HttpConnect => "HTTPConnect",
            ProxyProtocol::Grpc => "GRPC",
        };
        let egress = dir.join("egress-selector.yaml");
        std::fs::write(
            &egress,
            format!(
                "apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\n\
                 egressSelections:\n- name: cluster\n  connection:\n    proxyProtocol: {protocol}\n\
                 \x20   transport:\n      uds:\n        udsName: {}\n",
                socket.display()
            ),
        )?;
        Ok(Files {
            serving,
            kubelet_client,
            admin,
            admin_pair,
            sa_key,
            sa_pub,
            egress,
        })
    }
}

fn apiserver_flags(files: &Files, ca: &Path, etcd: &str, addr: SocketAddr) -> Vec<String> {
    let p = |p: &Path| p.display().to_string();
    vec![
        format!("--etcd-servers={etcd}"),
        format!("--bind-address={}", addr.ip()),
        format!("--advertise-address={}", addr.ip()),
        format!("--secure-port={}", addr.port()),
        "--insecure-port=0".into(),
        format!("--tls-cert-file={}", p(&files.serving.0)),
        format!("--tls-private-key-file={}", p(&files.serving.1)),
        format!("--client-ca-file={}", p(ca)),
        format!("--kubelet-certificate-authority={}", p(ca)),
        format!(
            "--kubelet-client-certificate={}",
            p(&files.kubelet_client.0)
        ),
        format!("--kubelet-client-key={}", p(&files.kubelet_client.1)),
        "--kubelet-preferred-address-types=InternalIP".into(),
        format!("--egress-selector-config-file={}", p(&files.egress)),
        "--authorization-mode=AlwaysAllow".into(),
        "--disable-admission-plugins=ServiceAccount".into(),
        "--endpoint-reconciler-type=none".into(),
        "--service-account-issuer=https://kubernetes.default.svc".into(),
        format!("--service-account-signing-key-file={}", p(&files.sa_key)),
        format!("--service-account-key-file={}", p(&files.sa_pub)),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        "--profiling=false".into(),
        "-v=2".into(),
    ]
}

fn kubeconfig_yaml(addr: SocketAddr, ca: &Path, admin: &(PathBuf, PathBuf)) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://{addr}\n\
         \x20   certificate-authority: {}\nusers:\n- name: admin\n  user:\n\
         \x20   client-certificate: {}\n    client-key: {}\ncontexts:\n- name: e2e\n  context:\n\
         \x20   cluster: e2e\n    user: admin\n    namespace: default\ncurrent-context: e2e\n",
        ca.display(),
        admin.0.display(),
        admin.1.display()
    )
}

fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.as_std().get_program()))
}
