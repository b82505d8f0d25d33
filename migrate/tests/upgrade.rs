//! Upgrades: this sshbridge reads migration state files written by older
//! versions (fixtures under tests/fixtures, one per released format), keeps
//! every node's phase and history, and writes them back in its own format.
//! The rules are in docs/upgrade.md.

use std::path::Path;

use sshbridge_migrate::{FileStore, NodePhase, RunPhase, Settings, SCHEMA};

/// A copy of the fixture `name` in a fresh directory (loads never write,
/// but saves do).
fn fixture_store(name: &str) -> (tempfile::TempDir, FileStore) {
    let dir = tempfile::tempdir().unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let to = dir.path().join("migration.json");
    std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    (dir, FileStore::new(to))
}

#[test]
fn a_store_written_by_0_1_0_is_read_with_every_phase_and_history() {
    let (_dir, store) = fixture_store("store-v1-0.1.0.json");
    let state = store.read().unwrap().expect("the fixture holds a state");
    assert_eq!(state.schema, 1);
    assert_eq!(state.phase, RunPhase::Paused);
    assert_eq!(state.phase_of("node-a"), NodePhase::Done);
    assert_eq!(state.nodes["node-a"].history.len(), 4);
    assert_eq!(state.phase_of("node-b"), NodePhase::RolledBack);
    assert_eq!(
        state.nodes["node-b"].rollback_reason.as_deref(),
        Some("konnectivity failure ratio 0.40 > 0.05")
    );
    assert_eq!(state.phase_of("node-c"), NodePhase::Shadow);
    let run = state.run.as_ref().expect("the rollout is kept");
    assert_eq!(run.current_batch, 1);
    // `ready_timeout` came after 0.1.0: an old file gets the default.
    assert_eq!(run.settings.ready_timeout, Settings::READY_TIMEOUT);

    // Saved again, it is in this version's format and reads back the same.
    store.write(&state).unwrap();
    let text = std::fs::read_to_string(store.path()).unwrap();
    assert!(text.contains(&format!("\"schema\": {SCHEMA}")), "{text}");
    assert!(text.contains("\"ready_timeout\""), "{text}");
    assert_eq!(store.read().unwrap().unwrap(), state);
}

#[test]
fn a_newer_minor_with_extra_keys_is_read_and_a_newer_schema_refused() {
    // A later 0.x may add keys within schema 1 (docs/upgrade.md); this
    // version ignores them rather than refusing the file.
    let (_dir, store) = fixture_store("store-v1-0.1.0.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store.path()).unwrap()).unwrap();
    v["future_key"] = "from a newer sshbridge".into();
    v["nodes"]["node-a"]["future_node_key"] = 7.into();
    std::fs::write(store.path(), v.to_string()).unwrap();
    let state = store.read().unwrap().unwrap();
    assert_eq!(state.phase_of("node-a"), NodePhase::Done);

    v["schema"] = (SCHEMA + 1).into();
    std::fs::write(store.path(), v.to_string()).unwrap();
    let err = store.read().unwrap_err().to_string();
    assert!(err.contains("newer than"), "{err}");
}
