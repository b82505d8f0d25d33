//! The per-connection russh handler: authentication against the authorized
//! keys and the `direct-tcpip` policy. Everything else russh refuses by
//! default (sessions, exec, remote forwarding).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use russh::keys::PublicKey;
use russh::server::VerifiedPublicKey;
use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Session};
use russh::{Channel, ChannelOpenFailure};

use super::{relay, Shared, DIAL_TIMEOUT};

/// SSH reason code "administratively prohibited" (RFC 4254 §5.1).
const ADMINISTRATIVELY_PROHIBITED: u32 = 1;
/// SSH reason code "connect failed" (RFC 4254 §5.1).
const CONNECT_FAILED: u32 = 2;

/// One connection's handler; only a pointer to the server's shared state, so
/// thousands of connections cost next to nothing here.
pub(super) struct ConnHandler {
    shared: Arc<Shared>,
}

impl ConnHandler {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn is_authorized(&self, key: &PublicKey) -> bool {
        self.shared
            .authorized
            .iter()
            .any(|k| k.key_data() == key.key_data())
    }

    fn verdict(&self, key: &PublicKey) -> Auth {
        if self.is_authorized(key) {
            Auth::Accept
        } else {
            Auth::reject()
        }
    }
}

/// Parses a `direct-tcpip` target into a socket address. Only IP literals
/// are accepted (a bracketed IPv6 literal too): resolving names would make
/// the simulation depend on DNS.
fn parse_target(host: &str, port: u32) -> Option<SocketAddr> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    let port = u16::try_from(port).ok()?;
    Some(SocketAddr::new(ip, port))
}

fn refusal(code: u32, reason: String) -> ChannelOpenFailure {
    ChannelOpenFailure::Other { code, reason }
}

impl Handler for ConnHandler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.verdict(offer.public_key))
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.verdict(key.public_key))
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let shared = &self.shared;
        let name = &shared.name;
        let allowed = match parse_target(host_to_connect, port_to_connect) {
            None => Err(format!(
                "administratively prohibited: simulated node {name} dials IP addresses \
                 only, not {host_to_connect}:{port_to_connect}"
            )),
            Some(addr) if !shared.allow.iter().any(|net| net.contains(&addr.ip())) => Err(format!(
                "administratively prohibited: simulated node {name} may not dial \
                 {addr}; add it to the node's allow list"
            )),
            Some(addr) => Ok(addr),
        };
        let addr = match allowed {
            Ok(addr) => addr,
            Err(reason) => {
                shared
                    .counters
                    .channels_refused
                    .fetch_add(1, Ordering::Relaxed);
                reply
                    .reject(refusal(ADMINISTRATIVELY_PROHIBITED, reason))
                    .await;
                return Ok(());
            }
        };
        // Dial outside the session loop: a slow target must not hold up the
        // connection's other channels or its keepalive replies.
        let shared = self.shared.clone();
        self.shared.tasks.spawn(async move {
            let dial = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(addr));
            let dialed = tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                dialed = dial => dialed,
            };
            let error = match dialed {
                Ok(Ok(stream)) => {
                    shared
                        .counters
                        .channels_opened
                        .fetch_add(1, Ordering::Relaxed);
                    reply.accept().await;
                    relay::run(channel, stream, &shared).await;
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {DIAL_TIMEOUT:?}"),
            };
            shared
                .counters
                .channels_refused
                .fetch_add(1, Ordering::Relaxed);
            let reason = format!(
                "connect failed: simulated node {} could not reach {addr}: {error}",
                shared.name
            );
            reply.reject(refusal(CONNECT_FAILED, reason)).await;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_target;

    #[test]
    fn targets_must_be_ip_literals_with_a_valid_port() {
        assert_eq!(
            parse_target("127.0.0.1", 80),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            parse_target("[::1]", 443),
            Some("[::1]:443".parse().unwrap())
        );
        assert_eq!(parse_target("::1", 443), Some("[::1]:443".parse().unwrap()));
        assert_eq!(parse_target("localhost", 80), None);
        assert_eq!(parse_target("127.0.0.1", 70000), None);
    }
}
