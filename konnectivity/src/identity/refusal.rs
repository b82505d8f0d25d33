//! Why an agent was refused: the gRPC status it receives, the log line and
//! the `reason` label of `sshbridge_konnectivity_agents_refused_total`.

use std::net::IpAddr;

/// Why an agent was refused. Each message names what the agent claimed,
/// what its credential proves, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No client certificate reached the server.
    #[error("the agent presented no client certificate; give it its node's certificate (CN system:node:NODE) with --cert/--key")]
    NoCertificate,
    /// The certificate could not be read.
    #[error("the agent's client certificate cannot be parsed: {0}")]
    BadCertificate(String),
    /// The certificate names no configured node.
    #[error("certificate {subject:?} names no configured node (it names {names:?}); issue it with CN system:node:NODE or a SAN DNS name NODE, for a node in the bridge's [[node]] list")]
    UnknownNode {
        /// Certificate subject.
        subject: String,
        /// The node names it carries.
        names: Vec<String>,
    },
    /// The certificate names several configured nodes.
    #[error(
        "certificate {subject:?} names several nodes ({nodes:?}); issue one certificate per node"
    )]
    SeveralNodes {
        /// Certificate subject.
        subject: String,
        /// The configured nodes it names.
        nodes: Vec<String>,
    },
    /// `host=` is not the certificate's node.
    #[error("agent of node {node} claims host={claimed}; an agent may only name its own node")]
    Host {
        /// The node the certificate proves.
        node: String,
        /// The claimed host.
        claimed: String,
    },
    /// `ipv4=`/`ipv6=` is not the node's address.
    #[error("agent of node {node} claims address {claimed}, but {node}'s address is {address}")]
    Address {
        /// The node the certificate proves.
        node: String,
        /// The claimed address.
        claimed: IpAddr,
        /// The node's configured address.
        address: IpAddr,
    },
    /// `cidr=` is outside the node's pod CIDRs.
    #[error("agent of node {node} claims cidr={claimed}, which is not inside {node}'s pod_cidrs {pod_cidrs:?}")]
    Cidr {
        /// The node the certificate proves.
        node: String,
        /// The claimed CIDR.
        claimed: ipnet::IpNet,
        /// The node's pod CIDRs.
        pod_cidrs: Vec<ipnet::IpNet>,
    },
    /// Token mode: the agent sent no `authorization: Bearer` token.
    #[error("the agent sent no `authorization: Bearer` token, and this bridge proves agents by service account token (agent_auth = \"tokenreview\"); start it with --service-account-token-path pointing at its projected service account token")]
    NoToken,
    /// Token mode: the apiserver's TokenReview did not authenticate it.
    #[error("the apiserver's TokenReview rejected the agent's token ({0}); give the agent a current token whose audience is one of konnectivity.tokenreview.audiences")]
    TokenRejected(String),
    /// Token mode: the token is valid but not of an allowed service account.
    #[error("the agent's token authenticates {user:?}, which is not one of konnectivity.tokenreview.service_accounts {allowed:?}; run the agent under one of them, or add its service account there")]
    ServiceAccount {
        /// The user the TokenReview returned.
        user: String,
        /// The allow-list, `NAMESPACE/NAME`.
        allowed: Vec<String>,
    },
    /// Token mode: nothing binds the token to a node.
    #[error("the token of {account} binds the agent to no node ({why}); mount a projected service account token of the agent's own pod (a legacy secret-based token names no pod)")]
    NoNodeBinding {
        /// The service account, `NAMESPACE/NAME`.
        account: String,
        /// What is missing.
        why: String,
    },
    /// Token mode: the token's node is not in the bridge's inventory.
    #[error("the token of {account} is bound to node {node:?} ({via}), which is not in the bridge's node list; add the node, or run the agent on a listed node")]
    TokenNodeUnknown {
        /// The service account, `NAMESPACE/NAME`.
        account: String,
        /// The node the token is bound to.
        node: String,
        /// How: its node claim, or its pod.
        via: String,
    },
    /// Token mode: the apiserver could not be asked; the agent is refused
    /// (fail closed) and retries.
    #[error("cannot check the agent's token: {0}; the agent is refused until the apiserver answers (it retries)")]
    ReviewUnavailable(String),
    /// The `agentID` is held by an agent of another node.
    #[error("agentID {id:?} is already held by an agent of {holder}; give each agent a unique --agent-id")]
    AgentIdTaken {
        /// The agent ID.
        id: String,
        /// Who holds it (a node name, or "an unproven agent").
        holder: String,
    },
}

impl Refusal {
    /// Every `reason` label value, for the metric.
    pub const REASONS: [&'static str; 11] = [
        "no_certificate",
        "no_token",
        "token_rejected",
        "service_account",
        "no_node_binding",
        "review_unavailable",
        "unknown_node",
        "host",
        "address",
        "cidr",
        "agent_id_taken",
    ];

    /// The metric label of this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_certificate",
            Refusal::NoToken => "no_token",
            Refusal::TokenRejected(_) => "token_rejected",
            Refusal::ServiceAccount { .. } => "service_account",
            Refusal::NoNodeBinding { .. } => "no_node_binding",
            Refusal::ReviewUnavailable(_) => "review_unavailable",
            Refusal::BadCertificate(_)
            | Refusal::TokenNodeUnknown { .. }
            | Refusal::UnknownNode { .. }
            | Refusal::SeveralNodes { .. } => "unknown_node",
            Refusal::Host { .. } => "host",
            Refusal::Address { .. } => "address",
            Refusal::Cidr { .. } => "cidr",
            Refusal::AgentIdTaken { .. } => "agent_id_taken",
        }
    }

    /// The gRPC status the agent receives.
    pub fn status(&self) -> tonic::Status {
        match self {
            Refusal::NoCertificate | Refusal::NoToken | Refusal::TokenRejected(_) => {
                tonic::Status::unauthenticated(self.to_string())
            }
            Refusal::ReviewUnavailable(_) => tonic::Status::unavailable(self.to_string()),
            _ => tonic::Status::permission_denied(self.to_string()),
        }
    }
}
