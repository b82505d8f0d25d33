//! The per-node session actor: connect, verify, authenticate, keep alive,
//! back off, reconnect and roll over to a new credential.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::rollover::{self, Up};
use super::shared::Shared;
use super::TunnelState;
use sshbridge_core::backoff::Backoff;
use sshbridge_core::lock;

/// The actor: runs until `stop` is cancelled.
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut backoff = Backoff::new(&shared.context().config().backoff);
    let (node, addr) = (shared.node.name.clone(), shared.addr.clone());
    loop {
        if shared.is_parked() {
            shared.set_state(TunnelState::Parked);
            tracing::info!(node = %node, addr = %addr, "ssh tunnel parked");
            tokio::select! {
                _ = shared.unparked() => backoff.reset(),
                _ = stop.cancelled() => break,
            }
        }
        shared.set_state(TunnelState::Connecting);
        let ctx = shared.context();
        // The handshake futures are boxed: inline, their state (russh's
        // whole connect) would size this actor's task for its whole life,
        // about 10 KiB per idle tunnel.
        let attempt = tokio::select! {
            r = Box::pin(rollover::connect(&shared, ctx)) => r,
            _ = stop.cancelled() => break,
        };
        match attempt {
            Ok((est, ctx)) => {
                let mut live = Up::publish(&shared, est, ctx);
                let up_at = tokio::time::Instant::now();
                tracing::info!(node = %node, addr = %addr, "ssh session up");
                let mut rolls = shared.rollover.subscribe();
                rolls.mark_unchanged();
                let end = loop {
                    tokio::select! {
                        _ = &mut live.ended => break None,
                        why = shared.host_key_distrusted() => {
                            tracing::warn!(node = %node, addr = %addr, reason = %why,
                                "closing the ssh session: its host key is no longer trusted");
                            shared.session_lost(format!(
                                "node {node}: SSH session with {addr} closed: {why}; reconnecting"
                            ));
                            break Some("host key no longer trusted");
                        }
                        _ = stop.cancelled() => break Some("sshbridge stopping"),
                        _ = shared.parked_and_idle() => break Some("sshbridge no longer needs this session"),
                        Ok(()) = rolls.changed() => {
                            let next = tokio::select! {
                                r = Box::pin(rollover::attempt(&shared)) => r,
                                _ = stop.cancelled() => None,
                            };
                            if let Some((est, ctx)) = next {
                                let credential = ctx.credential();
                                let old = std::mem::replace(&mut live, Up::publish(&shared, est, ctx));
                                rollover::retire(&shared, old, stop.clone());
                                tracing::info!(node = %node, addr = %addr, credential = %credential,
                                    "ssh session rolled over to the new credential; the previous one closes when its streams end");
                            }
                        }
                    }
                };
                shared.session_down();
                let handle = live.handle;
                if let Some(why) = end {
                    let bye = handle.disconnect(russh::Disconnect::ByApplication, why, "en");
                    let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
                    if stop.is_cancelled() {
                        break;
                    }
                    continue;
                }
                let reason = lock(&live.end_reason)
                    .take()
                    .unwrap_or_else(|| "connection closed".into());
                let msg = format!(
                    "node {node}: SSH session with {addr} was lost: {reason}; reconnecting"
                );
                tracing::warn!(node = %node, addr = %addr, reason = %reason, "ssh session lost");
                shared.session_lost(msg);
                backoff.reset_if_stable(up_at.elapsed());
            }
            Err(e) => {
                tracing::warn!(node = %node, addr = %addr, kind = e.kind().as_str(), error = %e, "ssh connect failed");
                shared.attempt_failed(&e);
            }
        }
        shared.set_state(TunnelState::Backoff);
        tokio::select! {
            _ = backoff.wait() => {}
            _ = stop.cancelled() => break,
        }
    }
    shared.session_down();
    shared.set_state(TunnelState::Stopped);
    tracing::debug!(node = %node, addr = %addr, "ssh tunnel stopped");
}
