//! `sshbridge manifests ...`: print ready-to-apply manifests built from the
//! operator's config (rendering lives in `sshbridge-manifests`), for the
//! Kubernetes release given by `--kubernetes-version` or read from the
//! cluster with `--from-cluster`.

mod cluster;
mod node_sshd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use sshbridge::manifests::{
    self, AgentOptions, EgressOptions, EgressProtocol, KubeVersion, RbacOptions, StaticPodOptions,
    SystemdOptions,
};

/// `sshbridge manifests KIND [--config FILE] ...`.
#[derive(Debug, Args)]
pub struct ManifestsArgs {
    #[command(subcommand)]
    kind: Kind,
    /// Configuration file the values come from.
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        global = true,
        default_value = "/etc/sshbridge/sshbridge.toml"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Kind {
    /// kube-apiserver's EgressSelectorConfiguration for the `cluster` egress.
    EgressSelector {
        /// proxyProtocol: grpc or http-connect (default: grpc when
        /// egress.grpc_uds is set or --uds is given, else http-connect).
        #[arg(long, value_parser = parse_protocol)]
        protocol: Option<EgressProtocol>,
        /// Use this socket instead of the bridge's, e.g. an upstream
        /// konnectivity-server's.
        #[arg(long, value_name = "PATH")]
        uds: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// ServiceAccount and DaemonSet of the Konnectivity agents (one per
    /// node, identified by the node's name and IP).
    KonnectivityAgent {
        /// Agent image; an apiserver-network-proxy `proxy-agent` image gets
        /// upstream's flags (default: this build's sshbridge image).
        #[arg(long, value_name = "IMG")]
        image: Option<String>,
        /// Host agents dial (default: the IP of konnectivity.agent_listen).
        #[arg(long, value_name = "HOST")]
        server_address: Option<String>,
        /// Namespace of the agents.
        #[arg(long, default_value = "kube-system")]
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
    /// The bridge's own RBAC: only what the config needs (list/watch nodes
    /// for the Kubernetes inventory; create tokenreviews and get pods in
    /// the agents' namespaces for agent_auth = "tokenreview").
    Rbac {
        /// Name of the ServiceAccount, roles and bindings.
        #[arg(long, default_value = "sshbridge")]
        name: String,
        /// Namespace of the ServiceAccount.
        #[arg(long, default_value = "kube-system")]
        namespace: String,
        /// Bind this user (the CN of the kubeconfig's client certificate)
        /// instead of creating a ServiceAccount.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// A static Pod running `sshbridge run` on this control-plane host.
    StaticPod {
        /// Image holding the sshbridge binary.
        #[arg(long, value_name = "IMG")]
        image: Option<String>,
        /// --drain-timeout of `sshbridge run` (the grace period is longer).
        #[arg(long, value_parser = super::humantime_duration, default_value = "25s")]
        drain_timeout: Duration,
        #[command(flatten)]
        target: Target,
    },
    /// What each node's sshd must allow the bridge and nothing more: a
    /// `Match User` block for sshd_config, or a restricted authorized_keys
    /// line (docs/least-privilege.md).
    NodeSshd(node_sshd::NodeSshdArgs),
    /// A hardened systemd unit running `sshbridge run`.
    Systemd {
        /// Path of the installed binary.
        #[arg(long, value_name = "PATH", default_value = "/usr/local/bin/sshbridge")]
        bin: PathBuf,
        /// Account the daemon runs as (it must be able to read the keys).
        #[arg(long, default_value = "sshbridge")]
        user: String,
        /// --drain-timeout of `sshbridge run` (TimeoutStopSec is longer).
        #[arg(long, value_parser = super::humantime_duration, default_value = "25s")]
        drain_timeout: Duration,
    },
}

/// The Kubernetes release the manifests are for.
#[derive(Debug, Args)]
struct Target {
    /// Kubernetes release of the cluster, MAJOR.MINOR (default: the newest
    /// supported, 1.37; supported: 1.20 to 1.37). Fields the release does
    /// not know are left out or replaced, as the output's header says.
    #[arg(long, value_name = "X.Y", value_parser = parse_version, conflicts_with = "from_cluster")]
    kubernetes_version: Option<KubeVersion>,
    /// Read the release from the cluster's /version (with `kubectl get
    /// --raw /version`, so every kubeconfig kubectl accepts works).
    #[arg(long)]
    from_cluster: bool,
    /// Kubeconfig for --from-cluster (default: kubectl's: $KUBECONFIG or
    /// ~/.kube/config).
    #[arg(long, value_name = "FILE", requires = "from_cluster")]
    kubeconfig: Option<PathBuf>,
    /// kubectl program for --from-cluster.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "kubectl",
        requires = "from_cluster"
    )]
    kubectl: PathBuf,
}

impl Target {
    fn resolve(&self) -> anyhow::Result<KubeVersion> {
        if self.from_cluster {
            return cluster::version(&self.kubectl, self.kubeconfig.as_deref());
        }
        Ok(self.kubernetes_version.unwrap_or(KubeVersion::NEWEST))
    }
}

fn parse_protocol(s: &str) -> Result<EgressProtocol, String> {
    s.parse()
}

fn parse_version(s: &str) -> Result<KubeVersion, String> {
    s.parse()
        .map_err(|e: manifests::VersionError| e.to_string())
}

/// Prints the manifest asked for.
pub fn run(args: ManifestsArgs) -> anyhow::Result<ExitCode> {
    // Absolute, so every path in the manifests is (relative ones in the
    // file are taken from its directory).
    let path = std::path::absolute(&args.config).unwrap_or(args.config);
    let cfg = sshbridge_config::load(&path).with_context(|| {
        format!(
            "manifests are built from {}; pass --config FILE",
            path.display()
        )
    })?;
    let text = match args.kind {
        Kind::EgressSelector {
            protocol,
            uds,
            target,
        } => {
            // One form (apiserver.k8s.io/v1beta1) for the whole range; the
            // release is still checked, so a bad one is refused here too.
            target.resolve()?;
            manifests::egress_selector(&cfg, &EgressOptions { protocol, uds })?
        }
        Kind::KonnectivityAgent {
            image,
            server_address,
            namespace,
            target,
        } => manifests::konnectivity_agent(
            &cfg,
            &AgentOptions {
                image,
                server_address,
                namespace,
                kubernetes: target.resolve()?,
            },
        )?,
        Kind::Rbac {
            name,
            namespace,
            user,
            target,
        } => manifests::rbac(
            &cfg,
            &RbacOptions {
                name,
                namespace,
                user,
                kubernetes: target.resolve()?,
            },
        )?,
        Kind::StaticPod {
            image,
            drain_timeout,
            target,
        } => manifests::static_pod(
            &cfg,
            &StaticPodOptions {
                image,
                drain_timeout,
                kubernetes: target.resolve()?,
            },
        ),
        Kind::NodeSshd(a) => node_sshd::render(&cfg, a)?,
        Kind::Systemd {
            bin,
            user,
            drain_timeout,
        } => manifests::systemd_unit(
            &cfg,
            &SystemdOptions {
                bin,
                user,
                drain_timeout,
            },
        ),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
