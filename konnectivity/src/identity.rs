//! Which node an agent may serve, proven by its credential rather than
//! taken from its word.
//!
//! With `[konnectivity] identity = "proven"` (the default) an agent is
//! accepted for node N only when its TLS client certificate, verified
//! against `client_ca` during the handshake, names N: common name
//! `system:node:N` (the form of the kubelet's own client certificate, so a
//! DaemonSet can present `/var/lib/kubelet/pki/kubelet-client-current.pem`)
//! or a SAN DNS name equal to N. Everything its `agentIdentifiers` claim
//! must then agree with N's inventory: every `host=` is N, every
//! `ipv4=`/`ipv6=` is N's address, every `cidr=` lies inside one of N's
//! `pod_cidrs`. An agent that fails any of this is refused with a gRPC
//! status naming the mismatch, logged with its certificate subject, and
//! counted in `sshbridge_konnectivity_agents_refused_total{reason}`.
//!
//! With `agent_auth = "tokenreview"` the credential is a service account
//! token instead of the certificate ([`token`]); the node it is bound to
//! must agree with the identifiers in the same way.
//!
//! With `identity = "claimed"` (an explicit opt-out for fleets that share
//! one agent certificate) nothing is checked here: the agent serves the
//! nodes its identifiers name, as upstream's server does.

mod refusal;
pub mod token;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use sshbridge_config::{AgentIdentity, Node};
use x509_parser::extensions::GeneralName;

use super::identifiers::Identifiers;
pub use refusal::Refusal;
use sshbridge_core::metrics::{Counter, EncodeLabelSet, Family, Registry};
use token::{TokenAuth, TokenProof};

/// What tonic hands the agent service about the connection a stream came
/// on: the peer address and the client certificate chain that rustls
/// verified during the handshake (leaf first; `None` without one).
#[derive(Debug, Clone)]
pub struct AgentPeer {
    /// The agent's TCP address.
    pub addr: SocketAddr,
    /// The verified client certificate chain.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// The label set of `sshbridge_konnectivity_agents_refused_total`; its
/// values come from [`Refusal::reason`], a closed set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusedL {
    reason: &'static str,
}

/// The identity policy of the agent server and its refusal counters.
/// Cheap to clone; clones share the counters.
#[derive(Debug, Clone)]
pub struct Guard {
    mode: AgentIdentity,
    refused: Arc<[Counter; Refusal::REASONS.len()]>,
    tokens: Option<Arc<TokenAuth>>,
}

impl Guard {
    /// A guard enforcing `mode`, counting refusals in `registry`.
    pub fn new(mode: AgentIdentity, registry: &Registry) -> Guard {
        let family = Family::<RefusedL, Counter>::default();
        registry.register(
            "sshbridge_konnectivity_agents_refused",
            "Konnectivity agent streams refused because their credential or claims did not agree \
             with a node, by reason.",
            family.clone(),
        );
        let refused =
            Refusal::REASONS.map(|reason| family.get_or_create(&RefusedL { reason }).clone());
        Guard {
            mode,
            refused: Arc::new(refused),
            tokens: None,
        }
    }

    /// This guard proving agents by service account token
    /// (`agent_auth = "tokenreview"`) rather than by certificate.
    pub fn with_tokens(mut self, tokens: TokenAuth) -> Guard {
        self.tokens = Some(Arc::new(tokens));
        self
    }

    /// In token mode, what the bearer token in `md` proves (or why it is
    /// refused); `None` in certificate and claimed modes.
    pub async fn prove_token(
        &self,
        md: &tonic::metadata::MetadataMap,
    ) -> Option<Result<TokenProof, Refusal>> {
        match (&self.tokens, self.mode) {
            (Some(tokens), AgentIdentity::Proven) => Some(tokens.prove(md).await),
            _ => None,
        }
    }

    /// The node the token `proof` binds the agent to, if its identifiers
    /// agree with that node (the same check as for a certificate).
    pub fn authorize_token(
        &self,
        proof: &Result<TokenProof, Refusal>,
        identifiers: &Identifiers,
        nodes: &[Node],
    ) -> Result<Option<String>, Refusal> {
        let proof = proof.as_ref().map_err(Clone::clone)?;
        let node = nodes
            .iter()
            .find(|n| n.name.eq_ignore_ascii_case(&proof.node))
            .ok_or_else(|| Refusal::TokenNodeUnknown {
                account: proof.account.to_string(),
                node: proof.node.clone(),
                via: proof.via.clone(),
            })?;
        agrees(node, identifiers)?;
        Ok(Some(node.name.clone()))
    }

    /// The mode it enforces.
    pub fn mode(&self) -> AgentIdentity {
        self.mode
    }

    /// The node `peer` may serve (`None` in claimed mode: whatever its
    /// identifiers name), or why it is refused.
    pub fn authorize(
        &self,
        peer: Option<&AgentPeer>,
        identifiers: &Identifiers,
        nodes: &[Node],
    ) -> Result<Option<String>, Refusal> {
        if self.mode == AgentIdentity::Claimed {
            return Ok(None);
        }
        if self.tokens.is_some() {
            // Token mode proves nodes only through authorize_token.
            return Err(Refusal::NoToken);
        }
        let leaf = peer
            .and_then(|p| p.certs.as_ref())
            .and_then(|c| c.first())
            .ok_or(Refusal::NoCertificate)?;
        let credential = Credential::parse(leaf)?;
        let node = credential.node(nodes)?;
        agrees(node, identifiers)?;
        Ok(Some(node.name.clone()))
    }

    /// Counts `refusal`.
    pub fn count(&self, refusal: &Refusal) {
        if let Some(i) = Refusal::REASONS.iter().position(|r| *r == refusal.reason()) {
            self.refused[i].inc();
        }
    }

    /// Refusals so far, by reason.
    pub fn refused(&self) -> Vec<(&'static str, u64)> {
        Refusal::REASONS
            .iter()
            .zip(self.refused.iter())
            .map(|(r, c)| (*r, c.get()))
            .collect()
    }
}

/// What a client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The subject, as shown in logs (`CN=system:node:node-a, O=system:nodes`).
    pub subject: String,
    /// Node names it carries: from a CN `system:node:NAME` and from SAN
    /// DNS names.
    pub names: Vec<String>,
}

impl Credential {
    /// Reads the subject and node names of a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Credential, Refusal> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Refusal::BadCertificate(e.to_string()))?;
        let subject = cert.subject().to_string();
        let mut names: Vec<String> = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .filter_map(|cn| cn.strip_prefix("system:node:"))
            .map(str::to_string)
            .collect();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(dns) = name {
                    names.push((*dns).to_string());
                }
            }
        }
        Ok(Credential { subject, names })
    }

    /// The one configured node this credential names.
    pub fn node<'n>(&self, nodes: &'n [Node]) -> Result<&'n Node, Refusal> {
        let mut named: Vec<&Node> = nodes
            .iter()
            .filter(|n| self.names.iter().any(|c| c.eq_ignore_ascii_case(&n.name)))
            .collect();
        named.dedup_by(|a, b| a.name == b.name);
        match named.as_slice() {
            [one] => Ok(one),
            [] => Err(Refusal::UnknownNode {
                subject: self.subject.clone(),
                names: self.names.clone(),
            }),
            several => Err(Refusal::SeveralNodes {
                subject: self.subject.clone(),
                nodes: several.iter().map(|n| n.name.clone()).collect(),
            }),
        }
    }
}

/// Whether everything `ids` claims agrees with `node`'s inventory.
fn agrees(node: &Node, ids: &Identifiers) -> Result<(), Refusal> {
    if let Some(h) = ids
        .hosts
        .iter()
        .find(|h| !h.eq_ignore_ascii_case(&node.name))
    {
        return Err(Refusal::Host {
            node: node.name.clone(),
            claimed: h.clone(),
        });
    }
    let address = canonical(node.address);
    if let Some(a) = ids.addresses.iter().find(|a| canonical(**a) != address) {
        return Err(Refusal::Address {
            node: node.name.clone(),
            claimed: *a,
            address: node.address,
        });
    }
    let inside = |c: &ipnet::IpNet| node.pod_cidrs.iter().any(|p| p.contains(c));
    if let Some(c) = ids.cidrs.iter().find(|c| !inside(c)) {
        return Err(Refusal::Cidr {
            node: node.name.clone(),
            claimed: *c,
            pod_cidrs: node.pod_cidrs.clone(),
        });
    }
    Ok(())
}

/// `::ffff:10.0.0.5` is the IPv4 address for comparison.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
