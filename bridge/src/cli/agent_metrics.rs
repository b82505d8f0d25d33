//! `sshbridge agent --metrics-listen`: `/metrics` of the agent, over plain
//! HTTP (bind it to loopback or a pod IP; nothing secret is in it). Each
//! scrape renders the agent's counters at that moment.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sshbridge::agent::AgentStats;
use sshbridge_core::metrics::{Counter, Gauge, Registry, CONTENT_TYPE};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Time a scraper has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `/metrics` on `listener` until `stop`; `stats` is read at each
/// scrape.
pub(super) async fn serve(
    listener: TcpListener,
    stats: Arc<dyn Fn() -> AgentStats + Send + Sync>,
    stop: CancellationToken,
) {
    let router = axum::Router::new().route(
        "/metrics",
        get(move || {
            let text = render(&stats());
            async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], text) }
        }),
    );
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            c = listener.accept() => c,
        };
        let Ok((tcp, _)) = conn else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

/// The exposition of `s`.
fn render(s: &AgentStats) -> String {
    let r = Registry::new();
    let gauge = |name: &str, help: &str, v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        r.register(name, help, g);
    };
    gauge(
        "sshbridge_agent_servers_connected",
        "Distinct Konnectivity servers (serverIDs) this agent holds a stream to",
        s.servers_held,
    );
    gauge(
        "sshbridge_agent_servers_wanted",
        "Konnectivity servers this agent should hold a stream to (the last serverCount received; 0 before the first)",
        s.servers_wanted,
    );
    gauge(
        "sshbridge_agent_connections_open",
        "Target connections open through this agent",
        s.connections_open,
    );
    let counter = |name: &str, help: &str, v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        r.register(name, help, c);
    };
    counter(
        "sshbridge_agent_server_connects",
        "Streams established with a new Konnectivity server",
        s.connects_total,
    );
    counter(
        "sshbridge_agent_server_connect_failures",
        "Dials of the server address that failed",
        s.connect_failures_total,
    );
    counter(
        "sshbridge_agent_duplicate_servers",
        "Streams closed at once because they reached a server already held",
        s.duplicate_servers_total,
    );
    counter("sshbridge_agent_dials", "DIAL_REQs received", s.dials_total);
    counter(
        "sshbridge_agent_dial_failures",
        "Dials answered with an error",
        s.dial_failures_total,
    );
    r.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_servers_held_out_of_wanted() {
        let text = render(&AgentStats {
            servers_held: 2,
            servers_wanted: 3,
            duplicate_servers_total: 5,
            ..AgentStats::default()
        });
        for line in [
            "sshbridge_agent_servers_connected 2",
            "sshbridge_agent_servers_wanted 3",
            "sshbridge_agent_duplicate_servers_total 5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
