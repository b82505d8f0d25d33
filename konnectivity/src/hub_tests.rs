use sshbridge_config::Route;

use super::dial::is_timeout;
use super::*;
use crate::proto::Packet;

fn node(name: &str, addr: &str, pods: &[&str]) -> Node {
    let pods = pods.iter().map(|p| p.parse().unwrap()).collect();
    Node {
        route: Route::Konnectivity,
        ..Node::new(name, addr.parse().unwrap(), pods)
    }
}

fn hub() -> Hub {
    let options = Options {
        server_id: "cp-1".into(),
        server_count: 1,
        max_conn_buffer: Options::DEFAULT_MAX_CONN_BUFFER,
        stall_timeout: Options::DEFAULT_STALL_TIMEOUT,
        dial_timeout: Duration::from_secs(10),
        identity: Guard::new(
            sshbridge_config::AgentIdentity::Claimed,
            &sshbridge_core::metrics::Registry::new(),
        ),
    };
    Hub::new(
        options,
        &[
            node("node-a", "10.0.0.5", &["10.244.1.0/24"]),
            node("node-b", "10.0.0.6", &["10.244.2.0/24"]),
        ],
    )
}

fn picked(hub: &Hub, node: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| hub.pick(node).expect("an agent").0.id.clone())
        .collect()
}

#[test]
fn agents_map_to_nodes_and_streams_spread_round_robin() {
    let hub = hub();
    let live_a = hub.subscribe("node-a");
    let _a1 = hub
        .register("a1".into(), Identifiers::parse("host=node-a"), None)
        .unwrap();
    let _a2 = hub
        .register("a2".into(), Identifiers::parse("ipv4=10.0.0.5"), None)
        .unwrap();
    let _b = hub
        .register("b".into(), Identifiers::parse("cidr=10.244.2.0/24"), None)
        .unwrap();
    assert_eq!(*live_a.borrow(), 2);
    assert_eq!(*hub.subscribe("node-b").borrow(), 1);
    let mut got = picked(&hub, "node-a", 4);
    assert_eq!(got[0..2], got[2..4]);
    got.truncate(2);
    got.sort();
    assert_eq!(got, ["a1", "a2"]);
    assert_eq!(picked(&hub, "node-b", 2), ["b", "b"]);
    let infos = hub.agents("node-a");
    assert_eq!(infos.len(), 2);
    assert_eq!(infos[1].identifiers, "ipv4=10.0.0.5");
}

#[test]
fn draining_agents_serve_only_as_last_resort() {
    let hub = hub();
    let live = hub.subscribe("node-a");
    let a1 = hub
        .register("a1".into(), Identifiers::parse("host=node-a"), None)
        .unwrap();
    let a2 = hub
        .register("a2".into(), Identifiers::parse("host=node-a"), None)
        .unwrap();
    assert!(a1.agent.handle(Packet::drain()));
    hub.refresh();
    assert_eq!(*live.borrow(), 1);
    assert_eq!(picked(&hub, "node-a", 3), ["a2", "a2", "a2"]);
    assert!(hub.agents("node-a")[0].draining);
    a2.agent.handle(Packet::drain());
    hub.refresh();
    assert_eq!(*live.borrow(), 0);
    assert_eq!(picked(&hub, "node-a", 2).len(), 2, "still usable");
}

#[test]
fn a_duplicate_stream_waits_as_standby_and_its_close_leaves_the_serving_one() {
    let hub = hub();
    let first = hub
        .register("a1".into(), Identifiers::parse("host=node-a"), None)
        .unwrap();
    // The agent dials again through a load balancer and lands here.
    let dup = hub
        .register("a1".into(), Identifiers::parse("host=node-a"), None)
        .unwrap();
    assert!(
        !first.agent.ended.is_cancelled(),
        "the serving stream stays"
    );
    assert!(hub.is_standby(&dup.agent) && !hub.is_standby(&first.agent));
    assert_eq!(hub.standby_streams(), 1);
    assert_eq!(hub.agents("node-a").len(), 1, "one agent, not two");
    // It closes the duplicate at once: the first stream still serves.
    hub.unregister(&dup.agent);
    assert_eq!(hub.standby_streams(), 0);
    assert_eq!(*hub.subscribe("node-a").borrow(), 1);
    assert_eq!(picked(&hub, "node-a", 1), ["a1"]);
    assert!(!first.agent.ended.is_cancelled());
    // A second bridge's duplicate is no business of this hub; an agent ID
    // held by another node is still refused, standby or not.
    let other = hub.register(
        "a1".into(),
        Identifiers::parse("host=node-b"),
        Some("node-b".into()),
    );
    assert!(other.is_err(), "another owner never queues behind a1");
}

#[test]
fn a_standby_serves_when_the_old_stream_ends_or_once_it_settled() {
    let hub = hub();
    let old = hub
        .register("a1".into(), Identifiers::parse("host=node-a"), None)
        .unwrap();
    let new = hub
        .register("a1".into(), Identifiers::parse("host=node-a"), None)
        .unwrap();
    // The old stream ends: the standby serves, nothing else is cut.
    hub.unregister(&old.agent);
    assert!(!hub.is_standby(&new.agent));
    assert!(!new.agent.ended.is_cancelled());
    assert_eq!(*hub.subscribe("node-a").borrow(), 1);
    // A reconnect whose old stream is half-open: the newer stream stays
    // open past the settle time and replaces the old one.
    let newer = hub
        .register("a1".into(), Identifiers::parse("host=node-a"), None)
        .unwrap();
    hub.settle(&newer.agent);
    assert!(new.agent.ended.is_cancelled(), "the stale stream is ended");
    assert!(!newer.agent.ended.is_cancelled());
    assert_eq!(hub.standby_streams(), 0);
    // The old stream's reader unregisters late: the newer one must stay.
    hub.unregister(&new.agent);
    assert_eq!(hub.agents("node-a").len(), 1);
    assert_eq!(*hub.subscribe("node-a").borrow(), 1);
    hub.settle(&newer.agent);
    assert!(
        !newer.agent.ended.is_cancelled(),
        "settling twice is a no-op"
    );
    hub.unregister(&newer.agent);
    assert!(hub.agents("node-a").is_empty());
    assert_eq!(*hub.subscribe("node-a").borrow(), 0);
    // The ID is free again for any owner.
    assert!(hub
        .register(
            "a1".into(),
            Identifiers::parse("host=node-b"),
            Some("node-b".into())
        )
        .is_ok());
}

#[test]
fn no_agent_is_unavailable_with_a_reason_naming_the_node() {
    let hub = hub();
    let _b = hub
        .register("b".into(), Identifiers::parse("host=node-b"), None)
        .unwrap();
    let err = hub.pick("node-a").err().expect("no agent for node-a");
    assert_eq!(err.http_status(), 503);
    let text = err.to_string();
    assert!(
        text.contains("node-a") && text.contains("no Konnectivity agent"),
        "{text}"
    );
    assert_eq!(hub.stats("node-a").dials_unavailable, 1);
    let err = hub.pick("node-z").err().expect("unknown node");
    assert!(err.to_string().contains("not a configured node"));
}

#[test]
fn reload_remaps_agents() {
    let hub = hub();
    let _a = hub
        .register("a".into(), Identifiers::parse("ipv4=10.0.0.9"), None)
        .unwrap();
    assert!(hub.agents("node-a").is_empty());
    hub.set_nodes(&[node("node-a", "10.0.0.9", &[])]);
    assert_eq!(hub.agents("node-a").len(), 1);
    assert!(hub.agents("node-b").is_empty());
}

#[test]
fn timeouts_are_recognized_in_agent_errors() {
    assert!(is_timeout("dial tcp 10.0.0.5:80: i/o timeout"));
    assert!(is_timeout("context deadline exceeded"));
    assert!(is_timeout("connect timed out"));
    assert!(!is_timeout(
        "dial tcp 10.0.0.5:80: connect: connection refused"
    ));
}

#[test]
fn an_agent_that_stops_reading_its_control_replies_is_disconnected() {
    let flow = Flow {
        max_queued_control: 16,
        ..Flow::default()
    };
    let hub = Hub::with_flow(
        hub().options().clone(),
        flow,
        &[node("node-a", "10.0.0.5", &[])],
    );
    let events = Arc::new(Hits::default());
    hub.set_events(events.clone());
    let a = hub
        .register("a1".into(), Identifiers::parse("host=node-a"), None)
        .expect("registered");
    // The agent sends CLOSE_REQ after CLOSE_REQ and never reads the answers.
    for id in 1..=16 {
        assert!(!a.agent.handle(Packet::close_request(id)));
    }
    assert!(
        !a.agent.ended.is_cancelled(),
        "16 queued replies are allowed"
    );
    a.agent.handle(Packet::close_request(17));
    assert!(a.agent.ended.is_cancelled(), "the 17th disconnects it");
    assert_eq!(hub.agents_cut_for_control_backlog(), 1);
    assert_eq!(*lock(&events.cut), 1, "the hook heard of it as it happened");
}

/// Counts what the hub's event hooks are told.
#[derive(Debug, Default)]
struct Hits {
    cut: Mutex<u64>,
    limits: Mutex<Vec<crate::events::Limit>>,
}

impl crate::events::HubEvents for Hits {
    fn agent_cut_for_control_backlog(&self) {
        *lock(&self.cut) += 1;
    }
}

impl crate::events::NodeEvents for Hits {
    fn limit_hit(&self, limit: crate::events::Limit) {
        lock(&self.limits).push(limit);
    }
}

#[tokio::test]
async fn a_dial_over_the_connection_cap_is_told_to_the_nodes_hook() {
    let flow = Flow {
        max_connections_per_agent: 0,
        ..Flow::default()
    };
    let hub = Hub::with_flow(
        hub().options().clone(),
        flow,
        &[node("node-a", "10.0.0.5", &[])],
    );
    let events = Arc::new(Hits::default());
    hub.set_node_events("node-a", events.clone());
    let _a = hub
        .register("a1".into(), Identifiers::parse("host=node-a"), None)
        .expect("registered");
    let err = hub
        .dial("node-a", "10.0.0.5", 10250)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("max_connections_per_agent"),
        "{err}"
    );
    assert_eq!(*lock(&events.limits), [crate::events::Limit::ConnectionCap]);
    assert_eq!(hub.stats("node-a").dials_over_connection_cap, 1);
}
