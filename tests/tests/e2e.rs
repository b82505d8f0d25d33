//! End-to-end tests: one binary, real OpenSSH sshd nodes, the real
//! `sshbridge` daemon as a child process, an apiserver-like client.
//! Each test asserts something an operator would notice.

#[path = "e2e/support.rs"]
mod support;

#[path = "e2e/apiserver.rs"]
mod apiserver;
#[path = "e2e/certs.rs"]
mod certs;
#[path = "e2e/doctor.rs"]
mod doctor;
#[path = "e2e/doctor_certs.rs"]
mod doctor_certs;
#[path = "e2e/failures.rs"]
mod failures;
#[path = "e2e/ha_flips.rs"]
mod ha_flips;
#[path = "e2e/ha_leader.rs"]
mod ha_leader;
#[path = "e2e/ha_rollout.rs"]
mod ha_rollout;
#[path = "e2e/hardening.rs"]
mod hardening;
#[path = "e2e/hastatus.rs"]
mod hastatus;
#[path = "e2e/health.rs"]
mod health;
#[path = "e2e/hostkeys.rs"]
mod hostkeys;
#[path = "e2e/inventory.rs"]
mod inventory;
#[path = "e2e/inventory_flow.rs"]
mod inventory_flow;
#[path = "e2e/kit.rs"]
mod kit;
#[path = "e2e/konnectivity.rs"]
mod konnectivity;
#[path = "e2e/latency.rs"]
mod latency;
#[path = "e2e/leader_election.rs"]
mod leader_election;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/manifests.rs"]
mod manifests;
#[path = "e2e/migration.rs"]
mod migration;
#[path = "e2e/migration_record.rs"]
mod migration_record;
#[path = "e2e/multiagent.rs"]
mod multiagent;
#[path = "e2e/netfaults.rs"]
mod netfaults;
#[path = "e2e/netfaults_agent.rs"]
mod netfaults_agent;
#[path = "e2e/netfaults_migration.rs"]
mod netfaults_migration;
#[path = "e2e/netfaults_slow.rs"]
mod netfaults_slow;
#[path = "e2e/node_sshd.rs"]
mod node_sshd;
#[path = "e2e/node_sshd_certs.rs"]
mod node_sshd_certs;
#[path = "e2e/rbac.rs"]
mod rbac;
#[path = "e2e/rotation.rs"]
mod rotation;
#[path = "e2e/routing.rs"]
mod routing;
#[path = "e2e/shutdown.rs"]
mod shutdown;
#[path = "e2e/streams.rs"]
mod streams;
#[path = "e2e/threads.rs"]
mod threads;
#[path = "e2e/tokenreview.rs"]
mod tokenreview;
#[path = "e2e/trust.rs"]
mod trust;
#[path = "e2e/trust_admin.rs"]
mod trust_admin;
#[path = "e2e/upstream.rs"]
mod upstream;
#[path = "e2e/upstream_common.rs"]
mod upstream_common;
#[path = "e2e/upstream_scenarios.rs"]
mod upstream_scenarios;
#[path = "e2e/upstream_server.rs"]
mod upstream_server;
