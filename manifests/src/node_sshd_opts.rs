//! The options and errors of `manifests node-sshd`.

use std::path::PathBuf;

/// The command sshd runs instead of anything a client asks for: it only
/// waits for the client to close the session, discarding its input. No
/// client-chosen program ever runs; a forwarding session opened by hand
/// without `-N` stays up; and unlike `sleep infinity` it ends with the
/// connection (sshd does not kill a session's command when the client
/// goes away without a pty), so nothing is left running.
pub const WAIT_COMMAND: &str = "/bin/cat >/dev/null";

/// Most `PermitOpen` entries `--scope node` writes for one node (pod
/// CIDRs are listed address by address; PermitOpen has no CIDR syntax).
pub const MAX_PERMIT_ENTRIES: usize = 1024;

/// Which of the two node-side forms to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeSshdForm {
    /// A `Match User` block to append to the end of `/etc/ssh/sshd_config`.
    #[default]
    SshdConfig,
    /// One `authorized_keys` line (OpenSSH 7.2 or later for `restrict`).
    AuthorizedKeys,
}

/// What the node lets the bridge dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PermitScope {
    /// Only the kubelet: `ADDRESS:[health].kubelet_port`. Enough for
    /// exec, logs, port-forward, metrics and the bridge's health probe.
    #[default]
    Kubelet,
    /// Every port of the node's address and every address of its pod
    /// CIDRs (listed one by one; at most [`MAX_PERMIT_ENTRIES`]).
    Node,
    /// Any destination (`PermitOpen any`): needed for `egress.service_cidrs`,
    /// which the bridge spreads over all nodes. Still no shell, no pty, no
    /// agent, no listening.
    Any,
}

/// Flags of `manifests node-sshd`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeSshdOptions {
    /// `--form`.
    pub form: NodeSshdForm,
    /// `--scope`.
    pub scope: PermitScope,
    /// `--node NAME` (repeatable); empty: every node of the config.
    pub nodes: Vec<String>,
    /// `--permit HOST:PORT` (repeatable): more `PermitOpen` entries.
    pub extra_permits: Vec<String>,
    /// The bridge's public key line (`ssh-ed25519 AAAA... comment`), for
    /// the `authorized_keys` form without a user CA.
    pub public_key: Option<String>,
    /// `--user-ca FILE`: certificate mode; the CA public key file as the
    /// nodes hold it, and its contents (for the `authorized_keys` form).
    pub user_ca: Option<(PathBuf, String)>,
    /// `--principal`: the principal the nodes accept (default: `[ssh].user`).
    pub principal: Option<String>,
    /// `--principals-file`: `AuthorizedPrincipalsFile` on the nodes.
    pub principals_file: PathBuf,
}

/// Why the node-side setup cannot be printed; each names the flag to use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSshdError {
    /// `--node` names a node the config does not have.
    #[error(
        "{config}: there is no [[node]] named {name:?}; `--node` takes a name from the config"
    )]
    NoSuchNode {
        /// The config file.
        config: String,
        /// The name given.
        name: String,
    },
    /// `--scope node` with pod CIDRs too large to list.
    #[error(
        "node {node}: its pod_cidrs hold {count} addresses, more than the {max} PermitOpen \
         entries --scope node writes; use --scope any (sshd cannot match a CIDR)"
    )]
    TooManyAddresses {
        /// Node name.
        node: String,
        /// Addresses that would be listed.
        count: u128,
        /// The limit.
        max: usize,
    },
    /// A `--permit` value sshd would not parse as one entry.
    #[error("--permit {0:?}: expected HOST:PORT or [IPV6]:PORT, `*` allowed for either, no spaces or quotes")]
    BadPermit(String),
    /// The authorized_keys form needs a key to restrict.
    #[error("the authorized_keys form needs the bridge's public key: put it next to [ssh].identity as IDENTITY.pub, or use --user-ca")]
    NoPublicKey,
}
