//! `[konnectivity] agent_auth` and `[konnectivity.tokenreview]`.

use super::Ctx;
use crate::agent_auth::{AgentAuth, ServiceAccount, TokenReview};
use crate::model::{AgentIdentity, Konnectivity};
use crate::raw::{RawKonnectivity, RawTokenReview};
use crate::units::Problem;

const SECTION: &str = "konnectivity.tokenreview";

/// The resolved `agent_auth` of `raw`, whose identity mode is `identity`.
pub(super) fn agent_auth(
    cx: &mut Ctx<'_>,
    raw: &RawKonnectivity,
    identity: AgentIdentity,
) -> AgentAuth {
    let mode = raw
        .agent_auth
        .as_ref()
        .map(|v| (v.get_ref().as_str(), v.span()));
    let auth = match (mode, &raw.tokenreview) {
        (None | Some(("certificate", _)), None) => AgentAuth::Certificate,
        (Some(("tokenreview", _)), section) => {
            AgentAuth::TokenReview(tokenreview(cx, section.as_ref().unwrap_or(&EMPTY)))
        }
        (None | Some(("certificate", _)), Some(_)) => {
            let p = Problem {
                message: "is set but agent_auth is \"certificate\", so no token is reviewed".into(),
                hint: Some(
                    "set [konnectivity] agent_auth = \"tokenreview\", or remove the section".into(),
                ),
            };
            cx.report(&cx.d.section_span(SECTION), SECTION, p);
            AgentAuth::Certificate
        }
        (Some((other, span)), _) => {
            let p = Problem {
                message: format!("unknown agent_auth {other:?}"),
                hint: Some("write \"certificate\" (the default) or \"tokenreview\"".into()),
            };
            cx.report(&span, "konnectivity.agent_auth", p);
            AgentAuth::Certificate
        }
    };
    if let (AgentAuth::TokenReview(_), AgentIdentity::Claimed) = (&auth, identity) {
        let span = cx.at("konnectivity", raw.agent_auth.as_ref());
        let p = Problem {
            message: "\"tokenreview\" proves an agent's node, but identity = \"claimed\" takes agents at their word".into(),
            hint: Some("remove identity = \"claimed\" (the default, \"proven\", is what tokenreview needs)".into()),
        };
        cx.report(&span, "konnectivity.agent_auth", p);
    }
    auth
}

const EMPTY: RawTokenReview = RawTokenReview {
    audiences: None,
    service_accounts: None,
    cache_ttl: None,
};

fn tokenreview(cx: &mut Ctx<'_>, raw: &RawTokenReview) -> TokenReview {
    let mut audiences = Vec::new();
    for v in raw.audiences.iter().flatten() {
        let a = v.get_ref().trim();
        if a.is_empty() {
            let p = Problem {
                message: "an audience is empty".into(),
                hint: Some("give the audience the agents' tokens are issued for (the projected token's `audience`), or leave audiences out for the apiserver's own".into()),
            };
            cx.report(&v.span(), "konnectivity.tokenreview.audiences", p);
        } else if !audiences.iter().any(|x| x == a) {
            audiences.push(a.to_string());
        }
    }
    let mut service_accounts: Vec<ServiceAccount> = Vec::new();
    for v in raw.service_accounts.iter().flatten() {
        match v.get_ref().trim().parse::<ServiceAccount>() {
            Ok(sa) if !service_accounts.contains(&sa) => service_accounts.push(sa),
            Ok(_) => {}
            Err(message) => {
                let p = Problem {
                    message,
                    hint: Some("write the agents' service account as \"NAMESPACE/NAME\", e.g. \"kube-system/konnectivity-agent\"".into()),
                };
                cx.report(&v.span(), "konnectivity.tokenreview.service_accounts", p);
            }
        }
    }
    if raw.service_accounts.as_ref().is_none_or(|v| v.is_empty()) {
        let span = cx.d.section_span(SECTION);
        let span = if span == (0..0) {
            cx.d.section_span("konnectivity")
        } else {
            span
        };
        let p = Problem {
            message: "not set, so no agent's token would be accepted".into(),
            hint: Some("list the agents' service accounts under [konnectivity.tokenreview], e.g. service_accounts = [\"kube-system/konnectivity-agent\"]".into()),
        };
        cx.report(&span, "konnectivity.tokenreview.service_accounts", p);
    }
    TokenReview {
        audiences,
        service_accounts,
        cache_ttl: cx.duration(
            "konnectivity.tokenreview.cache_ttl",
            raw.cache_ttl.as_ref(),
            TokenReview::DEFAULT_CACHE_TTL,
            true,
        ),
    }
}

/// `agent_auth = "tokenreview"` asks the apiserver of `[kubernetes]`.
pub(super) fn needs_kubernetes(
    cx: &mut Ctx<'_>,
    raw: &RawKonnectivity,
    k: &Konnectivity,
    has_kubernetes: bool,
) {
    if matches!(k.agent_auth, AgentAuth::TokenReview(_)) && !has_kubernetes {
        let span = cx.at("konnectivity", raw.agent_auth.as_ref());
        let p = Problem {
            message: "\"tokenreview\" asks the apiserver about each agent's token, but the config has no [kubernetes] section".into(),
            hint: Some("add [kubernetes] with kubeconfig = \"/path/to/kubeconfig\" (or an empty [kubernetes] section in a pod with a service account)".into()),
        };
        cx.report(&span, "konnectivity.agent_auth", p);
    }
}
