//! Bounds on the TLS handshakes of one listener: at most `max` at once and
//! each within `timeout`. A connection that finds every slot taken is
//! closed at once rather than queued (queued sockets would hold file
//! descriptors just as well); both outcomes are counted per listener in
//! `sshbridge_tls_handshakes_refused_total` and
//! `sshbridge_tls_handshake_timeouts_total`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::metrics::Counter;

/// The handshake budget of one listener; clones share it.
#[derive(Clone)]
pub struct HandshakeLimit {
    listener: &'static str,
    /// One permit per handshake in flight; dropping a permit frees it.
    slots: Arc<Semaphore>,
    max: usize,
    timeout: Duration,
    refused: Arc<Counter>,
    timed_out: Arc<Counter>,
}

impl HandshakeLimit {
    /// A budget for `listener` (`agent`, `egress`, `admin`), counting
    /// refused and timed-out handshakes in `(refused, timed_out)`.
    pub fn new(
        listener: &'static str,
        max: usize,
        timeout: Duration,
        (refused, timed_out): (Arc<Counter>, Arc<Counter>),
    ) -> Self {
        HandshakeLimit {
            listener,
            slots: Arc::new(Semaphore::new(max.max(1))),
            max: max.max(1),
            timeout,
            refused,
            timed_out,
        }
    }

    /// A budget counted nowhere (library users and tests without a daemon).
    pub fn unmetered(listener: &'static str, max: usize, timeout: Duration) -> Self {
        Self::new(listener, max, timeout, Default::default())
    }

    /// Runs the TLS handshake of `io` within the budget; `None` (the
    /// connection dropped) when every slot is taken, on timeout or failure.
    pub async fn accept<IO>(
        &self,
        acceptor: &TlsAcceptor,
        io: IO,
        peer: SocketAddr,
    ) -> Option<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let listener = self.listener;
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            self.refused.inc();
            warn!(%peer, listener, max = self.max,
                "TLS handshake refused: {} already in progress on this listener (max_tls_handshakes)",
                self.max);
            return None;
        };
        match tokio::time::timeout(self.timeout, acceptor.accept(io)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                info!(%peer, listener, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.timed_out.inc();
                info!(%peer, listener, timeout = ?self.timeout, "TLS handshake timed out (tls_handshake_timeout)");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
