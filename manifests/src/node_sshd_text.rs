//! The text of `manifests node-sshd`: the preamble with the OpenSSH
//! version each directive needs, the `Match User` block and the
//! `authorized_keys` line.

use sshbridge_config::Config;

use super::node_sshd_opts::{NodeSshdError, NodeSshdForm, NodeSshdOptions, WAIT_COMMAND};

/// Comment lines before the first node: where the text goes, how to check
/// it, and which OpenSSH release each directive needs.
pub(crate) fn preamble(cfg: &Config, opts: &NodeSshdOptions) -> String {
    let user = &cfg.ssh.user;
    let mut out = match opts.form {
        NodeSshdForm::SshdConfig => format!(
            "# Append the block of each node to the END of that node's /etc/ssh/sshd_config\n\
             # (a Match block runs to the end of the file), then check and reload:\n\
             #   sshd -t && systemctl reload ssh   # or sshd, by distribution\n\
             # Directives and the OpenSSH release that introduced them:\n\
             #   Match User, ForceCommand, PermitOpen HOST:PORT: 4.4\n\
             #   PermitTunnel: 4.3; GatewayPorts, X11Forwarding, AllowAgentForwarding: before 4.0\n\
             #   AllowTcpForwarding local: 6.2; PermitTTY: 6.6; AllowStreamLocalForwarding: 6.7\n\
             #   PermitListen none: 7.8 (older sshd: delete that line; AllowTcpForwarding\n\
             #     local already refuses remote forwards)\n\
             #   TrustedUserCAKeys: 5.4, AuthorizedPrincipalsFile: 5.6 (inside Match: checked\n\
             #     with OpenSSH 9.2; if an older sshd -t refuses them there, move them above\n\
             #     the first Match of the file)\n\
             # Tested with `sshd -t` and end to end against OpenSSH 9.2.\n\
             # The block applies to user {user:?} ([ssh].user) only.\n"
        ),
        NodeSshdForm::AuthorizedKeys => format!(
            "# Put the line of each node into ~{user}/.ssh/authorized_keys on that node,\n\
             # replacing the bridge's unrestricted line. Options and the OpenSSH release\n\
             # that introduced them: restrict and port-forwarding: 7.2; permitopen,\n\
             # command: before 4.0; cert-authority, principals: 5.4.\n\
             # restrict turns off every forwarding, the pty, agent and X11 forwarding\n\
             # and ~/.ssh/rc (and whatever later releases add); port-forwarding then\n\
             # allows local forwards only to the permitopen list (remote forwards stay\n\
             # refused: they would need permitlisten, 7.8).\n"
        ),
    };
    out.push_str(&format!(
        "# The forced command only waits for the client to hang up ({WAIT_COMMAND}):\n\
         # nothing a client asks for runs, a forwarding session opened by hand without -N\n\
         # stays up, and the command ends with the connection.\n"
    ));
    if let Some((ca, _)) = &opts.user_ca {
        out.push_str(&format!(
            "# Certificate mode: the nodes trust user certificates signed by {ca}\n\
             # (install that public key at the same path on every node) for principal {principal:?}.\n",
            ca = ca.display(),
            principal = principal(cfg, opts),
        ));
        if opts.form == NodeSshdForm::SshdConfig {
            out.push_str(&format!(
                "# Write that principal, one per line, into {} on every node.\n\
                 # AuthorizedKeysFile none: plain keys of this user no longer log in.\n",
                opts.principals_file.display()
            ));
        }
    }
    out
}

/// The principal certificates must carry.
fn principal<'a>(cfg: &'a Config, opts: &'a NodeSshdOptions) -> &'a str {
    opts.principal.as_deref().unwrap_or(&cfg.ssh.user)
}

/// The `Match User` block of one node.
pub(crate) fn match_block(cfg: &Config, opts: &NodeSshdOptions, permits: &[String]) -> String {
    let open = if permits.is_empty() {
        "any".to_string()
    } else {
        permits.join(" ")
    };
    let mut out = format!(
        "Match User {user}\n\
         \x20   AllowTcpForwarding local\n\
         \x20   PermitOpen {open}\n\
         \x20   PermitListen none\n\
         \x20   GatewayPorts no\n\
         \x20   AllowStreamLocalForwarding no\n\
         \x20   AllowAgentForwarding no\n\
         \x20   X11Forwarding no\n\
         \x20   PermitTunnel no\n\
         \x20   PermitTTY no\n\
         \x20   ForceCommand {WAIT_COMMAND}\n",
        user = cfg.ssh.user,
    );
    if let Some((ca, _)) = &opts.user_ca {
        out.push_str(&format!(
            "    TrustedUserCAKeys {}\n    AuthorizedPrincipalsFile {}\n    AuthorizedKeysFile none\n",
            ca.display(),
            opts.principals_file.display()
        ));
    }
    out
}

/// The `authorized_keys` line of one node.
pub(crate) fn authorized_keys(
    cfg: &Config,
    opts: &NodeSshdOptions,
    permits: &[String],
) -> Result<String, NodeSshdError> {
    let mut options = Vec::new();
    let key = match &opts.user_ca {
        Some((_, ca_key)) => {
            options.push("cert-authority".to_string());
            options.push(format!("principals=\"{}\"", principal(cfg, opts)));
            ca_key.trim().to_string()
        }
        None => opts
            .public_key
            .as_deref()
            .ok_or(NodeSshdError::NoPublicKey)?
            .trim()
            .to_string(),
    };
    options.push("restrict".into());
    options.push("port-forwarding".into());
    options.extend(permits.iter().map(|p| format!("permitopen=\"{p}\"")));
    options.push(format!("command=\"{WAIT_COMMAND}\""));
    Ok(format!("{} {key}\n", options.join(",")))
}
