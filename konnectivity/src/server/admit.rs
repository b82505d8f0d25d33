//! Admitting an agent stream: the node its credential proves (certificate
//! or token), its claims against that node and the agent-ID rule, then its
//! registration with the hub; a refusal is logged and counted.

use tracing::{info, warn};

use crate::flow::Extensions;
use crate::hub::Hub;
use crate::identifiers::Identifiers;
use crate::identity::token::TokenProof;
use crate::identity::{AgentPeer, Credential, Refusal};
use crate::peer::Registered;

/// Checks a new agent stream and registers it with `hub`: the node its
/// certificate proves, its claims against that node, and the agent-ID rule.
#[cfg(test)]
pub(crate) fn admit(
    hub: &Hub,
    peer: Option<&AgentPeer>,
    id: String,
    identifiers: Identifiers,
    announced: (Extensions, Option<usize>),
) -> Result<Registered, tonic::Status> {
    admit_with(hub, (peer, None), id, identifiers, announced)
}

/// [`admit`] with what the agent's bearer token proves in token mode
/// (`agent_auth = "tokenreview"`), whose node is then the token's. A
/// refusal is logged with the certificate subject or the token's service
/// account (never the token) and counted.
pub(crate) fn admit_with(
    hub: &Hub,
    (peer, token): (Option<&AgentPeer>, Option<Result<TokenProof, Refusal>>),
    id: String,
    identifiers: Identifiers,
    announced: (Extensions, Option<usize>),
) -> Result<Registered, tonic::Status> {
    let guard = &hub.options().identity;
    let subject = match &token {
        Some(Ok(proof)) => proof.to_string(),
        Some(Err(_)) => "(token not accepted)".to_string(),
        None => peer
            .and_then(|p| p.certs.as_ref())
            .and_then(|c| c.first())
            .and_then(|leaf| Credential::parse(leaf).ok())
            .map_or_else(|| "(no certificate)".to_string(), |c| c.subject),
    };
    let addr = peer.map(|p| p.addr);
    let claims = identifiers.to_string();
    let authorized = match &token {
        Some(proof) => guard.authorize_token(proof, &identifiers, &hub.nodes()),
        None => guard.authorize(peer, &identifiers, &hub.nodes()),
    };
    let admitted = authorized.and_then(|owner| {
        let node = owner.clone();
        hub.register_with(id.clone(), identifiers, owner, announced)
            .map(|r| (r, node))
    });
    match admitted {
        Ok((registered, node)) => {
            let node = node.as_deref().unwrap_or("(claimed)");
            info!(agent = %id, ?addr, %subject, node, identifiers = %claims, "Konnectivity agent connected");
            Ok(registered)
        }
        Err(refusal) => {
            guard.count(&refusal);
            warn!(agent = %id, ?addr, %subject, identifiers = %claims, reason = refusal.reason(), "Konnectivity agent refused: {refusal}");
            Err(refusal.status())
        }
    }
}
