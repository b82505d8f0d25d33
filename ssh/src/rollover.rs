//! Rolling a node's session over to a new credential without dropping a
//! stream, and keeping the old credential when the node refuses the new.

use std::sync::Arc;
use std::time::Duration;

use russh::client::Handle;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::connect::{establish, Established};
use super::error::HandshakeError;
use super::shared::Shared;
use super::{HandshakeFailureKind, SshContext};
use sshbridge_core::lock;

/// The session serving new streams, as the actor holds it.
pub(crate) struct Up {
    pub(crate) handle: Arc<Handle<Client>>,
    pub(crate) ended: oneshot::Receiver<()>,
    pub(crate) end_reason: Arc<std::sync::Mutex<Option<String>>>,
    streams: Arc<watch::Sender<usize>>,
}

impl Up {
    /// Publishes `est` (authenticated with `ctx`) as the node's session.
    pub(crate) fn publish(shared: &Shared, est: Established, ctx: Arc<SshContext>) -> Up {
        let handle = Arc::new(est.handle);
        let streams = shared.session_up(handle.clone(), lock(&est.accepted).take(), ctx);
        Up {
            handle,
            ended: est.ended,
            end_reason: est.end_reason,
            streams,
        }
    }
}

/// Connects with `ctx`; when the node refuses its credential and an
/// earlier one worked, connects with that one instead and reports the
/// refusal, so a bad rotation never takes a node down.
pub(crate) async fn connect(
    shared: &Shared,
    ctx: Arc<SshContext>,
) -> Result<(Established, Arc<SshContext>), HandshakeError> {
    let refused = match establish(&shared.node, ctx.clone()).await {
        Ok(est) => {
            lock(&shared.rotation_refused).take();
            return Ok((est, ctx));
        }
        Err(e) if e.kind() == HandshakeFailureKind::Auth => e,
        Err(e) => return Err(e),
    };
    let previous = lock(&shared.last_good).clone();
    let Some(previous) = previous.filter(|p| p.credential_differs(&ctx)) else {
        return Err(refused);
    };
    let est = establish(&shared.node, previous.clone()).await?;
    report_refusal(shared, &ctx, &refused);
    Ok((est, previous))
}

/// Brings up a session with the current credential beside the live one;
/// `None` (reported) when the node refuses it.
pub(crate) async fn attempt(shared: &Shared) -> Option<(Established, Arc<SshContext>)> {
    let ctx = shared.context();
    match establish(&shared.node, ctx.clone()).await {
        Ok(est) => {
            lock(&shared.rotation_refused).take();
            Some((est, ctx))
        }
        Err(e) => {
            report_refusal(shared, &ctx, &e);
            None
        }
    }
}

fn report_refusal(shared: &Shared, ctx: &SshContext, e: &HandshakeError) {
    let credential = ctx.credential();
    tracing::warn!(node = %shared.node.name, addr = %shared.addr, credential = %credential,
        error = %e, "the node refused the new SSH credential; keeping the old session");
    shared.attempt_failed(e);
    shared.counters.rotation_refused();
    let msg = format!(
        "node {}: kept the SSH session on the previous credential: the new one ({credential}) was refused: {e}",
        shared.node.name
    );
    *lock(&shared.rotation_refused) = Some(msg.clone());
    *lock(&shared.last_error) = Some(msg);
}

/// Closes a rolled-over session once its last stream has ended (or at
/// stop), on the tunnel owner's tasks.
pub(crate) fn retire(shared: &Shared, old: Up, stop: CancellationToken) {
    let (node, addr) = (shared.node.name.clone(), shared.addr.clone());
    let name = format!("ssh retiring session {node}");
    shared.tasks.spawn(name, async move {
        let Up {
            handle,
            ended,
            streams,
            ..
        } = old;
        let mut open = streams.subscribe();
        tokio::select! {
            _ = open.wait_for(|n| *n == 0) => {}
            _ = ended => return,
            _ = stop.cancelled() => {}
        }
        tracing::info!(node = %node, addr = %addr,
            "closing the previous ssh session after a credential rollover: its streams have ended");
        let bye = handle.disconnect(russh::Disconnect::ByApplication, "credential rotated", "en");
        let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
    });
}
