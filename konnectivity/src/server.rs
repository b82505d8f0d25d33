//! The agent-facing gRPC server: `AgentService.Connect` over TLS on an
//! already-bound TCP listener. Accepting connections: [`accept`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use super::flow;
use super::hub::Hub;
use super::identifiers::Identifiers;
use super::identity::AgentPeer;
use super::proto::agent_service_server::{AgentService, AgentServiceServer};
use super::proto::packet::Payload;
use super::proto::Packet;
use sshbridge_core::tasks::Tasks;
use sshbridge_core::tls::TlsError;

mod accept;
pub(crate) mod admit;
use accept::{Accept, AgentConn};

/// Time an agent has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings find agents that vanished without closing their TCP connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Packets read from one agent between yields to other tasks.
const YIELD_EVERY: u32 = 16;
/// After shutdown, how long agents get to see their streams end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The agent server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server stopped with an error.
    #[error("Konnectivity agent server on {listen}: {source}")]
    Transport {
        /// The listening address.
        listen: String,
        /// tonic's reason.
        source: tonic::transport::Error,
    },
}

/// The TLS config agents connect with: `cert`/`key`, and with `client_ca`
/// a required client certificate. Offers ALPN `h2`, which gRPC clients
/// (grpc-go since 1.67) insist on.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let config = match client_ca {
        Some(ca) => Arc::unwrap_or_clone(sshbridge_core::tls::mtls_server_config(cert, key, ca)?),
        None => ServerConfig::builder_with_provider(sshbridge_core::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                path: cert.into(),
                source,
            })?
            .with_no_client_auth()
            .with_single_cert(
                sshbridge_core::tls::load_certs(cert)?,
                sshbridge_core::tls::load_key(key)?,
            )
            .map_err(|source| TlsError::Rustls {
                path: cert.into(),
                source,
            })?,
    };
    Ok(with_h2(config))
}

/// `config` with ALPN set to `h2`.
pub fn with_h2(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Bounds on the agent listener (`[konnectivity] max_tls_handshakes`,
/// `tls_handshake_timeout`, `max_concurrent_streams`).
#[derive(Clone)]
pub struct AgentBounds {
    /// The TLS handshake budget.
    pub handshakes: sshbridge_core::handshake::HandshakeLimit,
    /// HTTP/2 streams per agent connection.
    pub max_concurrent_streams: u32,
}

/// Serves `AgentService` on `listener` with TLS until `shutdown` is
/// cancelled; then every agent stream is ended and the server stops, once
/// its tasks have (within a grace of 2 s). Default bounds, and a task set
/// of its own; see [`serve_bounded`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    hub: Hub,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let tasks = Tasks::new();
    let bounds = AgentBounds {
        handshakes: sshbridge_core::handshake::HandshakeLimit::unmetered(
            "agent",
            64,
            HANDSHAKE_TIMEOUT,
        ),
        max_concurrent_streams: 100,
    };
    let served = serve_bounded(listener, tls, hub, shutdown, bounds, &tasks).await;
    let left = tasks.close_and_wait(SHUTDOWN_GRACE).await;
    if !left.is_empty() {
        warn!(
            ?left,
            "Konnectivity agent server: tasks still running after shutdown"
        );
    }
    served
}

/// [`serve`] with the configured bounds. Its tasks (the accept loop, each
/// TLS handshake, each agent stream's reader) run in `tasks`, under
/// `shutdown`: when it is cancelled they end, and the caller waits for
/// `tasks`.
pub async fn serve_bounded(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    hub: Hub,
    shutdown: CancellationToken,
    bounds: AgentBounds,
    tasks: &Tasks,
) -> Result<(), ServeError> {
    let listen = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let (tx, rx) = mpsc::channel::<io::Result<AgentConn>>(16);
    let acceptor = TlsAcceptor::from(tls);
    let accepting = shutdown.child_token();
    let handshakes = bounds.handshakes;
    let accept = Accept {
        acceptor,
        handshakes,
        tx,
        stop: accepting.clone(),
        tasks: tasks.clone(),
    };
    tasks.spawn("Konnectivity agent accept loop", accept.run(listener));
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(bounds.max_concurrent_streams))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(AgentServiceServer::new(AgentSvc {
            hub: hub.clone(),
            tasks: tasks.clone(),
            stop: shutdown.clone(),
        }))
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), {
            let shutdown = shutdown.clone();
            let hub = hub.clone();
            async move {
                shutdown.cancelled().await;
                hub.close_all();
            }
        });
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => Ok(()),
    };
    accepting.cancel();
    result.map_err(|source| ServeError::Transport { listen, source })
}

/// `AgentService` backed by a [`Hub`]; each agent stream's reader runs in
/// `tasks` and ends when `stop` is cancelled.
struct AgentSvc {
    hub: Hub,
    tasks: Tasks,
    stop: CancellationToken,
}

type PacketStream = Pin<Box<dyn Stream<Item = Result<Packet, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentSvc {
    type ConnectStream = PacketStream;

    async fn connect(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<PacketStream>, Status> {
        let peer = request.extensions().get::<AgentPeer>().cloned();
        let md = request.metadata();
        let ids: Vec<_> = md.get_all("agentid").iter().collect();
        let id = match ids.as_slice() {
            [one] => one
                .to_str()
                .map_err(|_| Status::invalid_argument("agentID metadata is not printable text"))?
                .to_string(),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "agentID metadata must be given exactly once, got {} values; start the agent with an --agent-id",
                    ids.len()
                )))
            }
        };
        if id.is_empty() {
            return Err(Status::invalid_argument("agentID metadata is empty"));
        }
        let query: Vec<&str> = md
            .get_all("agentidentifiers")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let identifiers = Identifiers::parse(&query.join("&"));
        let announced = flow::announced(md);
        let token = self.hub.options().identity.prove_token(md).await;
        let registered = admit::admit_with(
            &self.hub,
            (peer.as_ref(), token),
            id,
            identifiers,
            announced,
        )?;
        let agent = registered.agent.clone();
        self.tasks.spawn(
            "Konnectivity agent stream",
            read_agent(
                self.hub.clone(),
                agent.clone(),
                request.into_inner(),
                self.stop.clone(),
            ),
        );
        let outbound = registered.outbound().map(Ok);
        let mut response = Response::new(Box::pin(outbound) as PacketStream);
        flow::announce(
            response.metadata_mut(),
            agent.ext,
            self.hub.flow().credit_window,
        );
        let server_id = MetadataValue::try_from(self.hub.options().server_id.as_str())
            .map_err(|_| Status::internal("the bridge id is not valid metadata text"))?;
        response.metadata_mut().insert("serverid", server_id);
        response.metadata_mut().insert(
            "servercount",
            MetadataValue::from(self.hub.options().server_count),
        );
        Ok(response)
    }
}

/// Reads one agent's packets until its stream ends, then fails what was in
/// flight through it.
async fn read_agent(
    hub: Hub,
    agent: Arc<super::peer::Agent>,
    mut inbound: Streaming<Packet>,
    stop: CancellationToken,
) {
    let mut handled: u32 = 0;
    // A standby (a newer stream of an agent ID that serves) takes over
    // once it has stayed open this long (hub/standby.rs).
    let mut standby = hub.is_standby(&agent);
    let settle = tokio::time::sleep(super::hub::STANDBY_SETTLE);
    tokio::pin!(settle);
    let reason = loop {
        handled = handled.wrapping_add(1);
        if handled % YIELD_EVERY == 0 {
            // Let the connections' readers take what was queued before
            // more arrives, so a burst does not count against a reader
            // that keeps up.
            tokio::task::yield_now().await;
        }
        let next = tokio::select! {
            _ = &mut settle, if standby => {
                standby = false;
                hub.settle(&agent);
                continue;
            }
            _ = agent.ended.cancelled() => break "stream replaced or server shutting down".to_string(),
            _ = stop.cancelled() => break "the server is shutting down".to_string(),
            next = inbound.message() => next,
        };
        match next {
            Ok(Some(packet)) => {
                if let Some(Payload::Data(d)) = &packet.payload {
                    if d.error.is_empty() {
                        agent.room_for(d.connect_id, d.data.len()).await;
                    }
                }
                if agent.handle(packet) {
                    hub.refresh();
                }
            }
            Ok(None) => break "the agent closed its stream".to_string(),
            Err(status) => break format!("stream failed: {}", status.message()),
        }
    };
    debug!(agent = %agent.id, %reason, "Konnectivity agent stream ended");
    agent.end(&reason);
    hub.unregister(&agent);
}
