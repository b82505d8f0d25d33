//! `sshbridge manifests node-sshd`: flags, and the files it reads (the
//! identity's public key, the user CA) before the pure rendering in
//! `sshbridge-manifests`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use sshbridge::manifests::{self, NodeSshdForm, NodeSshdOptions, PermitScope};
use sshbridge_config::Config;

/// Flags of `manifests node-sshd`.
#[derive(Debug, Args)]
pub struct NodeSshdArgs {
    /// sshd_config: a `Match User` block to append to each node's
    /// /etc/ssh/sshd_config; authorized-keys: one restricted line.
    #[arg(long, value_enum, default_value_t = Form::SshdConfig)]
    form: Form,
    /// What the node lets the bridge dial: kubelet (ADDRESS:kubelet_port
    /// only), node (every port of the node address and every address of
    /// its pod CIDRs), any (needed for service CIDRs).
    #[arg(long, value_enum, default_value_t = Scope::Kubelet)]
    scope: Scope,
    /// Only this node (repeatable; default: every node of the config).
    #[arg(long = "node", value_name = "NAME")]
    nodes: Vec<String>,
    /// One more PermitOpen entry, HOST:PORT (`*` allowed), e.g. a node port.
    #[arg(long = "permit", value_name = "HOST:PORT")]
    permits: Vec<String>,
    /// Certificate mode: the user CA's public key file; nodes trust
    /// certificates it signs (TrustedUserCAKeys at the same path on the
    /// nodes, or `cert-authority` in authorized_keys).
    #[arg(long, value_name = "FILE")]
    user_ca: Option<PathBuf>,
    /// Principal the nodes accept in certificate mode (default: [ssh].user).
    #[arg(long, value_name = "NAME", requires = "user_ca")]
    principal: Option<String>,
    /// AuthorizedPrincipalsFile on the nodes, in certificate mode.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/ssh/sshbridge_principals"
    )]
    principals_file: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Form {
    /// A `Match User` block for sshd_config.
    SshdConfig,
    /// A line for the user's authorized_keys.
    AuthorizedKeys,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scope {
    /// Only the kubelet port of the node address.
    Kubelet,
    /// The node address (any port) and its pod CIDRs.
    Node,
    /// Any destination.
    Any,
}

/// The text for `cfg`'s nodes.
pub fn render(cfg: &Config, a: NodeSshdArgs) -> anyhow::Result<String> {
    let form = match a.form {
        Form::SshdConfig => NodeSshdForm::SshdConfig,
        Form::AuthorizedKeys => NodeSshdForm::AuthorizedKeys,
    };
    let user_ca = match &a.user_ca {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "reading the user CA public key {} (--user-ca)",
                    path.display()
                )
            })?;
            let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            Some((abs, text))
        }
        None => None,
    };
    // The authorized_keys form without a CA restricts the bridge's own key.
    let public_key = if form == NodeSshdForm::AuthorizedKeys && user_ca.is_none() {
        Some(sshbridge::ssh::diagnose::public_key_line(
            &cfg.ssh.identity,
        )?)
    } else {
        None
    };
    let opts = NodeSshdOptions {
        form,
        scope: match a.scope {
            Scope::Kubelet => PermitScope::Kubelet,
            Scope::Node => PermitScope::Node,
            Scope::Any => PermitScope::Any,
        },
        nodes: a.nodes,
        extra_permits: a.permits,
        public_key,
        user_ca,
        principal: a.principal,
        principals_file: a.principals_file,
    };
    Ok(manifests::node_sshd(cfg, &opts)?)
}
