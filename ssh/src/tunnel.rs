//! The handle to a node's session actor, and dialing streams through it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use russh::{ChannelMsg, ChannelOpenFailure};
use sshbridge_config::{HostPort, Node};
use sshbridge_core::lock;
use sshbridge_core::tasks::Tasks;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::session;
use super::shared::{OpenGuard, Shared};
use super::stream::{pump, CreditSink, Incoming, PumpEnd, RecvBuffer, SshStream};
use super::{Counters, SshContext, TunnelState, TunnelStats};
use sshbridge_core::path::{BoxStream, DialError};

struct Inner {
    /// One session actor per `ssh.sessions_per_node`; the first is the
    /// node's primary: its state is the tunnel's state.
    lanes: Vec<Arc<Shared>>,
    /// Dropping the last handle drops this guard, which stops the actors.
    _stop: DropGuard,
}

/// Handle to one node's session actors (`ssh.sessions_per_node`, one by
/// default). Cheap to clone; dropping the last clone stops the actors
/// (closing the sessions and their streams).
#[derive(Clone)]
pub struct Tunnel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sh = self.primary();
        f.debug_struct("Tunnel")
            .field("node", &sh.node.name)
            .field("addr", &sh.addr)
            .field("state", &*sh.state.borrow())
            .field("sessions", &self.inner.lanes.len())
            .finish()
    }
}

impl Tunnel {
    /// Start the session actor for `node` on `tasks` (the owner's tracker,
    /// which also runs one pump task per stream, so the owner's shutdown
    /// waits for them). It stops when `shutdown` is cancelled, when
    /// drained, or when the last handle is dropped; its streams end with
    /// the session.
    pub fn spawn(
        node: Node,
        ctx: Arc<SshContext>,
        shutdown: CancellationToken,
        tasks: &Tasks,
    ) -> Tunnel {
        Tunnel::spawn_with(node, ctx, shutdown, || tasks.clone(), Counters::default())
    }

    pub(crate) fn spawn_with(
        node: Node,
        ctx: Arc<SshContext>,
        shutdown: CancellationToken,
        mut lane_tasks: impl FnMut() -> Tasks,
        counters: Counters,
    ) -> Tunnel {
        let stop = shutdown.child_token();
        // The counters are the node's: every session adds to the same ones.
        let counters = Arc::new(counters);
        let sessions = ctx.config().sessions_per_node.max(1);
        let lanes = (0..sessions)
            .map(|i| {
                let lane = stop.child_token();
                let tasks = lane_tasks();
                let shared = Arc::new(Shared {
                    addr: node.ssh_address.to_string(),
                    node: node.clone(),
                    ctx: Mutex::new(ctx.clone()),
                    state: watch::Sender::new(TunnelState::Connecting),
                    session: Mutex::new(None),
                    counters: counters.clone(),
                    last_error: Mutex::new(None),
                    up_since: Mutex::new(None),
                    draining: AtomicBool::new(false),
                    parked: watch::Sender::new(false),
                    open: watch::Sender::new(0),
                    stop: lane.clone(),
                    host_key: Mutex::new(None),
                    distrusted: watch::Sender::new(None),
                    tasks,
                    rollover: watch::Sender::new(0),
                    last_good: Mutex::new(None),
                    rotation_refused: Mutex::new(None),
                });
                let name = match i {
                    0 => format!("ssh session {}", node.name),
                    i => format!("ssh session {} #{}", node.name, i + 1),
                };
                shared.tasks.spawn(name, session::run(shared.clone(), lane));
                shared
            })
            .collect();
        Tunnel {
            inner: Arc::new(Inner {
                lanes,
                _stop: stop.drop_guard(),
            }),
        }
    }

    /// The runtime a new stream's session and pump run on, when the owner
    /// gave the sessions runtimes of their own ([`Tasks::on`]): that of
    /// the session the next dial takes. A stream whose client is served
    /// there too has no hop between threads.
    pub fn home(&self) -> Option<&tokio::runtime::Handle> {
        self.pick().tasks.home()
    }

    /// The first session: its state and errors are the tunnel's.
    fn primary(&self) -> &Arc<Shared> {
        &self.inner.lanes[0]
    }

    /// The session a new stream goes to: of those that are up, the one
    /// with the fewest open streams (the first on a tie, so a quiet node
    /// keeps using its first session); the first when none is up, so the
    /// dial fails with the primary's reason.
    fn pick(&self) -> &Arc<Shared> {
        let lanes = &self.inner.lanes;
        if lanes.len() == 1 {
            return &lanes[0];
        }
        lanes
            .iter()
            .filter(|sh| lock(&sh.session).is_some())
            .min_by_key(|sh| *sh.open.borrow())
            .unwrap_or(&lanes[0])
    }

    /// Open one direct-tcpip channel to `host:port` as seen from the node.
    /// Fails fast with [`DialError::Unavailable`] when the session is not
    /// up. No timeout inside; the caller applies `dial_timeout`.
    pub async fn dial(&self, host: &str, port: u16) -> Result<BoxStream, DialError> {
        let sh = self.pick();
        let target = HostPort {
            host: host.to_owned(),
            port,
        }
        .to_string();
        if sh.is_parked() {
            return Err(sh.unavailable(format!(
                "the SSH session with {} was closed when the migration was finalized; \
                 the node is served over konnectivity (routing it back to ssh reconnects)",
                sh.addr
            )));
        }
        if sh.draining.load(Ordering::SeqCst) {
            return Err(sh.unavailable(format!(
                "the SSH tunnel to {} is draining and takes no new streams",
                sh.addr
            )));
        }
        let Some(live) = lock(&sh.session).clone() else {
            let reason = lock(&sh.last_error).clone().unwrap_or_else(|| {
                format!(
                    "no SSH session with {} yet (state {}); wait for it to come up",
                    sh.addr,
                    sh.state.borrow().as_str()
                )
            });
            return Err(sh.unavailable(reason));
        };
        let guard = OpenGuard::new(sh, &live);
        let channel = live
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|e| match e {
                russh::Error::ChannelOpenFailure(f) => DialError::Refused {
                    node: sh.node.name.clone(),
                    target: target.clone(),
                    reason: open_failure(&f),
                },
                other => sh.unavailable(format!(
                    "SSH session with {} failed while opening a channel: {other}",
                    sh.addr
                )),
            })?;
        let (read_half, write_half) = channel.split();
        let buf = Arc::new(RecvBuffer::new(sh.context().config().max_stream_chunks));
        let gone = CancellationToken::new();
        let stream = SshStream::new(
            buf.clone(),
            Box::pin(write_half.make_writer()),
            sh.counters.clone(),
            gone.clone(),
        );
        let limit = sh.context().config().max_stream_buffer;
        let shared = sh.clone();
        let name = format!("ssh stream {}", sh.node.name);
        sh.tasks.spawn(name, async move {
            let events = Box::pin(futures::stream::unfold(read_half, |mut rx| async move {
                loop {
                    match rx.wait().await {
                        Some(ChannelMsg::Data { data }) => return Some((Incoming::Data(data), rx)),
                        Some(ChannelMsg::Eof) => return Some((Incoming::Eof, rx)),
                        Some(ChannelMsg::Close) | None => return None,
                        Some(_) => continue,
                    }
                }
            }));
            let mut sink = ChannelCredit(&write_half);
            let end = pump(events, &buf, limit, &shared.counters, &gone, &mut sink).await;
            match end {
                PumpEnd::Reset { buffered } => {
                    shared
                        .counters
                        .streams_reset
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %shared.node.name, addr = %shared.addr, target = %target, buffered, limit,
                        "stream reset: the node sent past the stream's window (ssh.max_stream_buffer)");
                    let _ = write_half.close().await;
                }
                PumpEnd::ReaderGone => {
                    let _ = write_half.close().await;
                }
                PumpEnd::Closed => {}
            }
            drop(guard);
        });
        Ok(Box::new(stream))
    }

    /// The current state (the first session's).
    pub fn state(&self) -> TunnelState {
        *self.primary().state.borrow()
    }

    /// A watch of the state.
    pub fn subscribe(&self) -> watch::Receiver<TunnelState> {
        self.primary().state.subscribe()
    }

    /// A snapshot of the counters (shared by the node's sessions; the
    /// state, errors and `up_since` are the first session's).
    pub fn stats(&self) -> TunnelStats {
        let sh = self.primary();
        let c = &sh.counters;
        TunnelStats {
            state: self.state(),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            handshake_failures: c.failures(),
            open_streams: self.inner.lanes.iter().map(|l| *l.open.borrow()).sum(),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            streams_reset: c.streams_reset.load(Ordering::Relaxed),
            stream_compactions: c.stream_compactions.load(Ordering::Relaxed),
            last_error: lock(&sh.last_error).clone(),
            rotation_refused: lock(&sh.rotation_refused).clone(),
            rotations_refused: c.rotations_refused.load(Ordering::Relaxed),
            up_since: *lock(&sh.up_since),
        }
    }

    /// Use `ctx` (identity, known_hosts, settings) from the next handshake
    /// on. The current session is kept, unless the new known_hosts no
    /// longer trusts the host key it was accepted with (revoked, or the
    /// node's key changed): then it is closed, its streams end, and the
    /// tunnel reconnects under the new known_hosts.
    ///
    /// When `ctx` authenticates differently (another identity key or
    /// certificate), the session rolls over: a new one is brought up
    /// beside it with the new credential, new streams go to it, and the
    /// old one closes once its streams have ended. A node that refuses the
    /// new credential keeps its old session (see
    /// [`TunnelStats::rotation_refused`]).
    ///
    /// Every session of the node does this on its own. A changed
    /// `ssh.sessions_per_node` applies to tunnels started after it.
    pub fn set_context(&self, ctx: Arc<SshContext>) {
        for sh in &self.inner.lanes {
            let old = std::mem::replace(&mut *lock(&sh.ctx), ctx.clone());
            sh.recheck_host_key(&ctx);
            // Compared with what the session authenticated with, so a reload
            // after a refused rollover tries the new credential again.
            let in_use = lock(&sh.last_good).clone().unwrap_or(old);
            if in_use.credential_differs(&ctx) {
                sh.rollover.send_modify(|g| *g += 1);
            }
        }
    }

    /// Parks the tunnel: no new dials; once the open streams have ended the
    /// session is closed and not reconnected until [`Tunnel::unpark`].
    /// Used when a migrated node no longer needs its SSH fallback.
    pub fn park(&self) {
        for sh in &self.inner.lanes {
            sh.parked.send_replace(true);
        }
    }

    /// Reconnects a parked tunnel (dials fail fast until it is up).
    pub fn unpark(&self) {
        for sh in &self.inner.lanes {
            sh.parked.send_replace(false);
        }
    }

    /// Stop taking new dials; resolve once open streams ended (the caller
    /// bounds this with a timeout), then close the sessions.
    pub async fn drain(&self) {
        let lanes = self.inner.lanes.iter().map(|sh| async move {
            sh.draining.store(true, Ordering::SeqCst);
            sh.set_state(TunnelState::Draining);
            let mut open = sh.open.subscribe();
            let _ = open.wait_for(|n| *n == 0).await;
            sh.stop.cancel();
        });
        futures::future::join_all(lanes).await;
    }
}

/// Returns window credit through russh's `window_on_consume` patch.
struct ChannelCredit<'a>(&'a russh::ChannelWriteHalf<russh::client::Msg>);

impl CreditSink for ChannelCredit<'_> {
    async fn credit(&mut self, bytes: u32) {
        // Fails only when the session is gone, which ends the pump anyway.
        let _ = self.0.consumed(bytes).await;
    }
}

pub(crate) fn open_failure(f: &ChannelOpenFailure) -> String {
    match f {
        ChannelOpenFailure::ConnectFailed => {
            "sshd could not connect to the target (connection refused or unreachable)".into()
        }
        ChannelOpenFailure::AdministrativelyProhibited => {
            "sshd forbids TCP forwarding for this user (AllowTcpForwarding / PermitOpen)".into()
        }
        ChannelOpenFailure::ResourceShortage => "sshd is out of resources".into(),
        ChannelOpenFailure::UnknownChannelType => "sshd does not support direct-tcpip".into(),
        ChannelOpenFailure::Other { code, reason } => format!("sshd refused ({code}): {reason}"),
    }
}

#[cfg(test)]
mod tests;
