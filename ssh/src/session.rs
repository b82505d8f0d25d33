//! The per-node session actor: connect, verify, authenticate, keep alive,
//! back off and reconnect.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::Handle;
use russh::keys::{Algorithm, HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::error::HandshakeError;
use super::known_hosts::HostIdentity;
use super::shared::Shared;
use super::{SshContext, TunnelState};
use sshbridge_config::Node;
use sshbridge_core::backoff::Backoff;
use sshbridge_core::lock;
use sshbridge_core::quickack::QuickAck;

/// A session that is up.
pub(crate) struct Established {
    pub(crate) handle: Handle<Client>,
    /// Resolves when russh's session task ends.
    pub(crate) ended: oneshot::Receiver<()>,
    pub(crate) end_reason: Arc<Mutex<Option<String>>>,
    /// The host key (or certificate) the node presented.
    pub(crate) accepted: Arc<Mutex<Option<PublicKeyOrCertificate>>>,
}

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
        let attempt = tokio::select! {
            r = establish(&shared.node, ctx) => r,
            _ = stop.cancelled() => break,
        };
        match attempt {
            Ok(est) => {
                let handle = Arc::new(est.handle);
                let up_at = tokio::time::Instant::now();
                shared.session_up(handle.clone(), lock(&est.accepted).take());
                tracing::info!(node = %node, addr = %addr, "ssh session up");
                let end = tokio::select! {
                    _ = est.ended => None,
                    why = shared.host_key_distrusted() => {
                        tracing::warn!(node = %node, addr = %addr, reason = %why,
                            "closing the ssh session: its host key is no longer trusted");
                        shared.session_lost(format!(
                            "node {node}: SSH session with {addr} closed: {why}; reconnecting"
                        ));
                        Some("host key no longer trusted")
                    }
                    _ = stop.cancelled() => Some("sshbridge stopping"),
                    _ = shared.parked_and_idle() => Some("sshbridge no longer needs this session"),
                };
                shared.session_down();
                if let Some(why) = end {
                    let bye = handle.disconnect(russh::Disconnect::ByApplication, why, "en");
                    let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
                    if stop.is_cancelled() {
                        break;
                    }
                    continue;
                }
                let reason = lock(&est.end_reason)
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

/// One attempt: a handshake slot, then TCP + handshake + auth within
/// `connect_timeout`.
pub(crate) async fn establish(
    node: &Node,
    ctx: Arc<SshContext>,
) -> Result<Established, HandshakeError> {
    let after = ctx.config().connect_timeout;
    // The semaphore is never closed, so acquiring cannot fail.
    let _permit = ctx.handshakes.clone().acquire_owned().await.ok();
    match tokio::time::timeout(after, handshake(node, ctx)).await {
        Ok(r) => r,
        Err(_) => Err(HandshakeError::Timeout {
            node: node.name.clone(),
            addr: node.ssh_address.to_string(),
            after,
        }),
    }
}

async fn handshake(node: &Node, ctx: Arc<SshContext>) -> Result<Established, HandshakeError> {
    let (name, addr) = (node.name.clone(), node.ssh_address.to_string());
    let protocol = |e: russh::Error| HandshakeError::Protocol {
        node: name.clone(),
        addr: addr.clone(),
        reason: e.to_string(),
    };
    let tcp = TcpStream::connect((node.ssh_address.host.as_str(), node.ssh_address.port))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => HandshakeError::Refused {
                node: name.clone(),
                addr: addr.clone(),
            },
            _ => HandshakeError::Connect {
                node: name.clone(),
                addr: addr.clone(),
                reason: e.to_string(),
            },
        })?;
    let _ = tcp.set_nodelay(true);
    // sshd leaves Nagle on for sessions without a pty: acknowledge what
    // it sends at once, or its second small packet waits for our delayed
    // ACK (up to 40 ms; see core's `quickack`).

    let target = HostIdentity {
        node: node.name.clone(),
        address: node.address.to_string(),
        ssh: node.ssh_address.clone(),
    };
    let config = Arc::new(client_config(&ctx, &target));
    let verdict = Arc::new(Mutex::new(None));
    let end_reason = Arc::new(Mutex::new(None));
    let accepted = Arc::new(Mutex::new(None));
    let (ended_tx, ended) = oneshot::channel();
    let client = Client {
        ctx: ctx.clone(),
        target,
        verdict: verdict.clone(),
        end_reason: end_reason.clone(),
        accepted: accepted.clone(),
        _ended: ended_tx,
    };
    let mut handle = match russh::client::connect_stream(config, QuickAck::new(tcp), client).await {
        Ok(h) => h,
        Err(e) => {
            return Err(match lock(&verdict).take() {
                Some(v) => HandshakeError::HostKey(v),
                None => protocol(e),
            })
        }
    };

    authenticate(&mut handle, &ctx, &name, &addr).await?;
    Ok(Established {
        handle,
        ended,
        end_reason,
        accepted,
    })
}

/// Authenticates with the context's certificate, or with the plain key.
async fn authenticate(
    handle: &mut Handle<Client>,
    ctx: &SshContext,
    node: &str,
    addr: &str,
) -> Result<(), HandshakeError> {
    let protocol = |e: russh::Error| HandshakeError::Protocol {
        node: node.to_owned(),
        addr: addr.to_owned(),
        reason: e.to_string(),
    };
    let identity = ctx.identity.clone();
    let user = ctx.config().user.clone();
    if let Some(cert) = ctx.certificate() {
        let res = handle
            .authenticate_openssh_cert(user.clone(), identity, cert.cert.clone())
            .await
            .map_err(protocol)?;
        if res.success() {
            return Ok(());
        }
        return Err(HandshakeError::CertificateAuth {
            node: node.to_owned(),
            addr: addr.to_owned(),
            user,
            certificate: cert.describe(),
            principals: cert.principals.join(","),
        });
    }
    let hash = if identity.algorithm().is_rsa() {
        // `None`: the server announced no signature algorithms; every
        // OpenSSH since 7.2 takes rsa-sha2-256.
        handle
            .best_supported_rsa_hash()
            .await
            .map_err(protocol)?
            .unwrap_or(Some(HashAlg::Sha256))
    } else {
        None
    };
    let res = handle
        .authenticate_publickey(user.clone(), PrivateKeyWithHashAlg::new(identity, hash))
        .await
        .map_err(protocol)?;
    if res.success() {
        return Ok(());
    }
    Err(HandshakeError::Auth {
        node: node.to_owned(),
        addr: addr.to_owned(),
        user,
        fingerprint: ctx.identity_fingerprint(),
    })
}

/// russh settings for one connection to `target`.
fn client_config(ctx: &SshContext, target: &HostIdentity) -> russh::client::Config {
    let cfg = ctx.config();
    // Consumption-driven windows (vendor/README.md): a channel's queue holds
    // at most one window of data messages of at least one byte each, so it
    // can never fill and block the session loop.
    let window = u32::try_from(cfg.max_stream_buffer).unwrap_or(u32::MAX);
    let mut c = russh::client::Config {
        window_size: window,
        window_on_consume: true,
        channel_buffer_size: window as usize + 64,
        nodelay: true,
        inactivity_timeout: None,
        ..Default::default()
    };
    // russh declares the peer dead when a timer tick finds `keepalive_max`
    // keepalives unanswered, i.e. after (max + 1) ticks; shorten the tick
    // so detection lands at `keepalive_interval * keepalive_max`.
    let max = cfg.keepalive_max;
    if max > 0 && !cfg.keepalive_interval.is_zero() {
        c.keepalive_interval = Some(cfg.keepalive_interval * max / (max + 1));
        c.keepalive_max = max as usize;
    } else {
        c.keepalive_interval = None;
    }
    // Ask for the key types known_hosts lists for this host first, so a
    // host with several keys presents one we can check (as OpenSSH does).
    let (known, has_ca) = ctx.known_hosts().known_algorithms(target);
    let defaults = russh::Preferred::DEFAULT.key.to_vec();
    let mut keys = Vec::new();
    for alg in known {
        if matches!(alg, Algorithm::Rsa { .. }) {
            keys.extend(
                defaults
                    .iter()
                    .filter(|a| matches!(a, Algorithm::Rsa { .. }))
                    .cloned(),
            );
        } else {
            keys.push(alg);
        }
    }
    for alg in &defaults {
        if !keys.contains(alg) {
            keys.push(alg.clone());
        }
    }
    c.preferred.key = keys.into();
    if has_ca {
        c.preferred.host_key_certificates = defaults.into();
    }
    c
}
