//! The `[konnectivity]` section: the agent server's listener, TLS, agent
//! identity and the protocol extensions offered.

use super::Ctx;
use crate::model::{AgentIdentity, Konnectivity};
use crate::raw::RawKonnectivity;
use crate::units::{self, Problem};

pub(super) fn konnectivity(cx: &mut Ctx<'_>, raw: &RawKonnectivity) -> Konnectivity {
    const FALLBACK: ([u8; 4], u16) = ([127, 0, 0, 1], 8132);
    let agent_listen = match &raw.agent_listen {
        None => {
            let span = cx.d.section_span("konnectivity");
            let p = Problem {
                message: "not set".into(),
                hint: Some("give the address agents dial, on the network the nodes reach, e.g. \"10.0.0.2:8132\" (\"0.0.0.0:8132\" for every interface)".into()),
            };
            cx.report(&span, "konnectivity.agent_listen", p);
            FALLBACK.into()
        }
        Some(v) => units::socket_addr(v.get_ref()).unwrap_or_else(|p| {
            cx.report(&v.span(), "konnectivity.agent_listen", p);
            FALLBACK.into()
        }),
    };
    let identity = match &raw.identity {
        None => AgentIdentity::Proven,
        Some(v) => match v.get_ref().as_str() {
            "proven" => AgentIdentity::Proven,
            "claimed" => AgentIdentity::Claimed,
            other => {
                let p = Problem {
                    message: format!("unknown identity mode {other:?}"),
                    hint: Some("write \"proven\" (the default) or \"claimed\"".into()),
                };
                cx.report(&v.span(), "konnectivity.identity", p);
                AgentIdentity::Proven
            }
        },
    };
    let client_ca = raw
        .client_ca
        .as_ref()
        .map(|v| cx.file("konnectivity", "konnectivity.client_ca", Some(v), "", false));
    let agent_auth = super::tokenreview::agent_auth(cx, raw, identity);
    if client_ca.is_none()
        && identity == AgentIdentity::Proven
        && agent_auth == crate::AgentAuth::Certificate
    {
        let span = cx.d.section_span("konnectivity");
        let p = Problem {
            message: "not set, so agents cannot prove which node they serve".into(),
            hint: Some("point client_ca at the CA of the agents' node certificates (the kubelet client CA, for certificates with CN system:node:NAME), set agent_auth = \"tokenreview\" to prove nodes with service account tokens, or set identity = \"claimed\" to take agents at their word".into()),
        };
        cx.report(&span, "konnectivity.client_ca", p);
    }
    Konnectivity {
        agent_listen,
        cert: cx.file(
            "konnectivity",
            "konnectivity.cert",
            Some(&raw.cert),
            "",
            false,
        ),
        key: cx.file("konnectivity", "konnectivity.key", Some(&raw.key), "", true),
        client_ca,
        server_count: cx.count("konnectivity.server_count", raw.server_count.as_ref(), 1, 1),
        max_tls_handshakes: cx.count(
            "konnectivity.max_tls_handshakes",
            raw.max_tls_handshakes.as_ref(),
            64,
            1,
        ) as usize,
        tls_handshake_timeout: cx.duration(
            "konnectivity.tls_handshake_timeout",
            raw.tls_handshake_timeout.as_ref(),
            "10s",
            false,
        ),
        max_concurrent_streams: cx.count(
            "konnectivity.max_concurrent_streams",
            raw.max_concurrent_streams.as_ref(),
            100,
            1,
        ),
        identity,
        agent_auth,
        extensions: konnectivity_extensions(cx, raw.extensions.as_deref()),
        credit_window: cx.size(
            "konnectivity.credit_window",
            raw.credit_window.as_ref(),
            4 << 20,
        ),
        stall_timeout: cx.duration(
            "konnectivity.stall_timeout",
            raw.stall_timeout.as_ref(),
            "30s",
            false,
        ),
        stall_window: cx.duration(
            "konnectivity.stall_window",
            raw.stall_window.as_ref(),
            "5m",
            false,
        ),
        half_close_idle: cx.duration(
            "konnectivity.half_close_idle",
            raw.half_close_idle.as_ref(),
            "5s",
            false,
        ),
        max_connections_per_agent: cx.count(
            "konnectivity.max_connections_per_agent",
            raw.max_connections_per_agent.as_ref(),
            4096,
            1,
        ),
        max_queued_control: cx.count(
            "konnectivity.max_queued_control",
            raw.max_queued_control.as_ref(),
            8192,
            16,
        ),
    }
}

/// `[konnectivity] extensions`: known names only; default both.
fn konnectivity_extensions(cx: &mut Ctx<'_>, raw: Option<&[crate::raw::Str]>) -> Vec<String> {
    const KNOWN: [&str; 2] = ["half-close", "credit"];
    let Some(raw) = raw else {
        return KNOWN.iter().map(|s| s.to_string()).collect();
    };
    let mut out = Vec::new();
    for v in raw {
        let name = v.get_ref();
        if KNOWN.contains(&name.as_str()) {
            if !out.contains(name) {
                out.push(name.clone());
            }
        } else {
            let p = Problem {
                message: format!("unknown extension {name:?}"),
                hint: Some("known: \"half-close\", \"credit\"; [] turns both off".into()),
            };
            cx.report(&v.span(), "konnectivity.extensions", p);
        }
    }
    out
}
