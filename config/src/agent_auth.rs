//! `[konnectivity] agent_auth` and `[konnectivity.tokenreview]`: how an
//! agent proves which node it serves when `identity = "proven"`.

use std::fmt;
use std::time::Duration;

/// `[konnectivity] agent_auth`: the credential that proves an agent's node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AgentAuth {
    /// `"certificate"` (default): the TLS client certificate, verified
    /// against `client_ca`, names the node (CN `system:node:NAME` or a SAN
    /// DNS name `NAME`).
    #[default]
    Certificate,
    /// `"tokenreview"`: the agent's `authorization: Bearer` service account
    /// token, checked by a TokenReview against the apiserver of
    /// `[kubernetes]`, bound to a node through its node claim or its pod.
    TokenReview(TokenReview),
}

impl AgentAuth {
    /// The name used in the config file.
    pub fn as_str(&self) -> &'static str {
        match self {
            AgentAuth::Certificate => "certificate",
            AgentAuth::TokenReview(_) => "tokenreview",
        }
    }
}

/// `[konnectivity.tokenreview]`: what a token must be to be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReview {
    /// Audiences the TokenReview asks for; empty means the apiserver's own
    /// (its `--api-audiences`, by default its service account issuer).
    pub audiences: Vec<String>,
    /// The service accounts whose tokens are accepted (upstream's
    /// `--agent-namespace`/`--agent-service-account`, as a list).
    pub service_accounts: Vec<ServiceAccount>,
    /// How long a review's answer (accepted or rejected) is reused for the
    /// same token; zero reviews every stream.
    pub cache_ttl: Duration,
}

impl TokenReview {
    /// Default `cache_ttl`.
    pub const DEFAULT_CACHE_TTL: &'static str = "10s";
}

/// A service account, `NAMESPACE/NAME` in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceAccount {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ServiceAccount {
    /// The account of the user name a TokenReview returns for a service
    /// account token, `system:serviceaccount:NAMESPACE:NAME`; `None` for any
    /// other user.
    pub fn from_username(user: &str) -> Option<ServiceAccount> {
        let rest = user.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then(|| ServiceAccount {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for ServiceAccount {
    type Err = String;

    /// `NAMESPACE/NAME`, each a DNS label or subdomain of lower-case
    /// letters, digits, `-` and `.`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (namespace, name) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not NAMESPACE/NAME"))?;
        let valid = |part: &str| {
            !part.is_empty()
                && part.len() <= 253
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                && part.as_bytes()[0].is_ascii_alphanumeric()
                && part.as_bytes()[part.len() - 1].is_ascii_alphanumeric()
        };
        if !valid(namespace) || !valid(name) {
            return Err(format!(
                "{s:?} is not NAMESPACE/NAME of lower-case letters, digits, '-' and '.'"
            ));
        }
        Ok(ServiceAccount {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ServiceAccount;

    #[test]
    fn service_accounts_parse_from_the_config_and_from_usernames() {
        let sa: ServiceAccount = "kube-system/konnectivity-agent".parse().unwrap();
        assert_eq!(sa.to_string(), "kube-system/konnectivity-agent");
        assert_eq!(
            ServiceAccount::from_username("system:serviceaccount:kube-system:konnectivity-agent"),
            Some(sa)
        );
        for bad in ["kube-system", "/x", "x/", "Kube/x", "a/b/c", "a/-b"] {
            assert!(bad.parse::<ServiceAccount>().is_err(), "{bad} accepted");
        }
        for user in [
            "system:node:n1",
            "system:serviceaccount:ns",
            "system:serviceaccount::x",
            "system:serviceaccount:ns:a:b",
            "admin",
        ] {
            assert_eq!(ServiceAccount::from_username(user), None, "{user}");
        }
    }
}
