//! `[admin]`: where the admin API listens and how TCP callers
//! authenticate (TLS with client certificates, or a bearer token).

use super::Ctx;
use crate::model::{Admin, AdminTls, Listen};
use crate::raw::RawAdmin;
use crate::units::{self, Problem};

pub(super) fn admin(cx: &mut Ctx<'_>, raw: &RawAdmin) -> Admin {
    let default = Listen::Unix("/run/sshbridge/admin.sock".into());
    let listen = match &raw.listen {
        None => default,
        Some(v) => units::listen(v.get_ref()).unwrap_or_else(|p| {
            cx.report(&v.span(), "admin.listen", p);
            default
        }),
    };
    let tls = admin_tls(cx, raw);
    let token_file = raw
        .token_file
        .as_ref()
        .map(|v| cx.file("admin", "admin.token_file", Some(v), "", true));
    let listen_span = cx.at("admin", raw.listen.as_ref());
    match &listen {
        Listen::Unix(_) => {
            let tcp_only = [
                ("admin.cert", &raw.cert),
                ("admin.key", &raw.key),
                ("admin.client_ca", &raw.client_ca),
                ("admin.token_file", &raw.token_file),
            ];
            for (key, v) in tcp_only {
                if let Some(v) = v {
                    let p = Problem {
                        message: "applies only to a TCP admin listener".into(),
                        hint: Some("the unix socket is protected by its mode 0600; remove the key, or set listen to ip:port".into()),
                    };
                    cx.report(&v.span(), key, p);
                }
            }
        }
        Listen::Tcp(addr) => {
            let mtls = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
            if !mtls && token_file.is_none() {
                let p = Problem {
                    message: format!("TCP listener {addr} would let anyone who can connect change routes"),
                    hint: Some("set [admin] client_ca (with cert and key) for mutual TLS, or token_file for a bearer token; or listen on \"unix:/run/sshbridge/admin.sock\"".into()),
                };
                cx.report(&listen_span, "admin.listen", p);
            } else if tls.is_none() && !addr.ip().is_loopback() {
                let p = Problem {
                    message: format!(
                        "a bearer token sent in plain HTTP to {addr} can be read off the network"
                    ),
                    hint: Some(
                        "set [admin] cert and key to serve TLS, or listen on a loopback address"
                            .into(),
                    ),
                };
                cx.report(&listen_span, "admin.listen", p);
            }
        }
    }
    Admin {
        listen,
        tls,
        token_file,
        max_tls_handshakes: cx.count(
            "admin.max_tls_handshakes",
            raw.max_tls_handshakes.as_ref(),
            16,
            1,
        ) as usize,
        tls_handshake_timeout: cx.duration(
            "admin.tls_handshake_timeout",
            raw.tls_handshake_timeout.as_ref(),
            "5s",
            false,
        ),
    }
}

/// `[admin] cert`, `key`, `client_ca`: the first two together, the third
/// only with them.
fn admin_tls(cx: &mut Ctx<'_>, raw: &RawAdmin) -> Option<AdminTls> {
    let client_ca = raw
        .client_ca
        .as_ref()
        .map(|v| cx.file("admin", "admin.client_ca", Some(v), "", false));
    match (&raw.cert, &raw.key) {
        (Some(cert), Some(key)) => Some(AdminTls {
            cert: cx.file("admin", "admin.cert", Some(cert), "", false),
            key: cx.file("admin", "admin.key", Some(key), "", true),
            client_ca,
        }),
        (None, None) => {
            if let Some(v) = &raw.client_ca {
                let p = Problem {
                    message: "needs the admin server's own certificate".into(),
                    hint: Some("set [admin] cert and key as well".into()),
                };
                cx.report(&v.span(), "admin.client_ca", p);
            }
            None
        }
        (Some(v), None) | (None, Some(v)) => {
            let (key, missing) = if raw.key.is_none() {
                ("admin.cert", "key")
            } else {
                ("admin.key", "cert")
            };
            let p = Problem {
                message: format!("is set without admin.{missing}"),
                hint: Some("set both cert and key, or neither".into()),
            };
            cx.report(&v.span(), key, p);
            None
        }
    }
}
