//! A fleet of fake nodes and helpers for the controller tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sshbridge_config::Route;
use tokio::time::sleep;

use crate::controller::{Controller, Status};
use crate::fleet::{Fleet, LiveCounters, NodeView, ProbeSample, RouteError};
use crate::settings::{BatchSpec, Settings};

/// One fake node: its readiness, probe behaviour and live counters.
#[derive(Debug, Clone)]
pub struct FakeNode {
    pub ssh_up: bool,
    pub agents: u32,
    pub route: Route,
    pub ssh_latency: Duration,
    pub konn_latency: Duration,
    /// Konnectivity probes fail with this error.
    pub konn_error: Option<String>,
    /// Konnectivity probes never answer.
    pub konn_hangs: bool,
    pub konn_live: LiveCounters,
    /// What the other bridges say of the node.
    pub peers: Vec<crate::peers::PeerView>,
}

impl Default for FakeNode {
    fn default() -> Self {
        FakeNode {
            ssh_up: true,
            agents: 1,
            route: Route::Ssh,
            ssh_latency: Duration::from_millis(10),
            konn_latency: Duration::from_millis(12),
            konn_error: None,
            konn_hangs: false,
            konn_live: LiveCounters::default(),
            peers: Vec::new(),
        }
    }
}

/// The daemon, faked. After `freeze` (the process "died") route changes
/// are ignored, as a dead daemon serves nothing.
#[derive(Default)]
pub struct FakeFleet {
    nodes: Mutex<BTreeMap<String, FakeNode>>,
    frozen: AtomicBool,
}

impl FakeFleet {
    /// `n` ready nodes named node-a, node-b, ...
    pub fn new(n: usize) -> Arc<Self> {
        let f = FakeFleet::default();
        {
            let mut nodes = f.nodes.lock().unwrap();
            for i in 0..n {
                nodes.insert(name(i), FakeNode::default());
            }
        }
        Arc::new(f)
    }

    pub fn edit(&self, node: &str, change: impl FnOnce(&mut FakeNode)) {
        change(self.nodes.lock().unwrap().get_mut(node).expect("fake node"));
    }

    pub fn route(&self, node: &str) -> Route {
        self.nodes.lock().unwrap()[node].route
    }

    pub fn routes(&self) -> BTreeMap<String, Route> {
        let nodes = self.nodes.lock().unwrap();
        nodes.iter().map(|(n, f)| (n.clone(), f.route)).collect()
    }

    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

/// node-a, node-b, ...
pub fn name(i: usize) -> String {
    format!("node-{}", (b'a' + i as u8) as char)
}

impl Fleet for FakeFleet {
    fn nodes(&self) -> Vec<NodeView> {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .iter()
            .map(|(n, f)| NodeView {
                name: n.clone(),
                ssh_up: f.ssh_up,
                agents_connected: f.agents,
                agents_healthy: f.agents,
                route: f.route,
            })
            .collect()
    }

    fn probe(
        &self,
        node: &str,
        path: Route,
    ) -> impl std::future::Future<Output = ProbeSample> + Send {
        let f = self.nodes.lock().unwrap().get(node).cloned();
        async move {
            let Some(f) = f else {
                return ProbeSample::failed(Duration::ZERO, "unknown node");
            };
            match path {
                Route::Ssh => {
                    sleep(f.ssh_latency).await;
                    ProbeSample::ok(f.ssh_latency)
                }
                Route::Konnectivity => {
                    if f.konn_hangs {
                        std::future::pending::<()>().await;
                    }
                    sleep(f.konn_latency).await;
                    match f.konn_error {
                        Some(e) => ProbeSample::failed(f.konn_latency, e),
                        None => ProbeSample::ok(f.konn_latency),
                    }
                }
            }
        }
    }

    fn live(&self, node: &str, path: Route) -> LiveCounters {
        let nodes = self.nodes.lock().unwrap();
        match (nodes.get(node), path) {
            (Some(f), Route::Konnectivity) => f.konn_live.clone(),
            _ => LiveCounters::default(),
        }
    }

    fn peers(&self, node: &str) -> Vec<crate::peers::PeerView> {
        let nodes = self.nodes.lock().unwrap();
        nodes.get(node).map(|f| f.peers.clone()).unwrap_or_default()
    }

    fn set_route(&self, node: &str, route: Route) -> Result<(), RouteError> {
        if self.frozen.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut nodes = self.nodes.lock().unwrap();
        let f = nodes.get_mut(node).ok_or_else(|| RouteError {
            node: node.into(),
            route,
            reason: "no such node".into(),
        })?;
        f.route = route;
        Ok(())
    }
}

/// Settings that make a whole rollout take a few virtual minutes.
pub fn settings(per_batch: usize) -> Settings {
    Settings {
        batch_size: BatchSpec::Count(per_batch),
        shadow_probes: 3,
        max_failure_ratio: 0.0,
        max_latency_ratio: 2.0,
        soak: Duration::from_secs(60),
        probe_interval: Duration::from_secs(1),
        probe_timeout: Duration::from_secs(5),
        ready_timeout: Duration::from_secs(60),
    }
}

/// Bound every await of a test (virtual time: an hour is instant).
pub async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(3600), f)
        .await
        .expect("test step timed out")
}

/// Poll the status until `done` holds for it; returns that status.
pub async fn wait_until(ctl: &Controller, done: impl Fn(&Status) -> bool) -> Status {
    within(async {
        loop {
            let s = ctl.status().await.expect("status");
            if done(&s) {
                return s;
            }
            sleep(Duration::from_millis(500)).await;
        }
    })
    .await
}
