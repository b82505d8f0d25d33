//! `sshbridge manifests ...`: print ready-to-apply manifests built from the
//! operator's config (rendering lives in `sshbridge::manifests`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use sshbridge::manifests::{
    self, AgentOptions, EgressOptions, EgressProtocol, StaticPodOptions, SystemdOptions,
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
    },
    /// A static Pod running `sshbridge run` on this control-plane host.
    StaticPod {
        /// Image holding the sshbridge binary.
        #[arg(long, value_name = "IMG")]
        image: Option<String>,
        /// --drain-timeout of `sshbridge run` (the grace period is longer).
        #[arg(long, value_parser = super::humantime_duration, default_value = "25s")]
        drain_timeout: Duration,
    },
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

fn parse_protocol(s: &str) -> Result<EgressProtocol, String> {
    s.parse()
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
        Kind::EgressSelector { protocol, uds } => {
            manifests::egress_selector(&cfg, &EgressOptions { protocol, uds })?
        }
        Kind::KonnectivityAgent {
            image,
            server_address,
            namespace,
        } => manifests::konnectivity_agent(
            &cfg,
            &AgentOptions {
                image,
                server_address,
                namespace,
            },
        )?,
        Kind::StaticPod {
            image,
            drain_timeout,
        } => manifests::static_pod(
            &cfg,
            &StaticPodOptions {
                image,
                drain_timeout,
            },
        ),
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
