//! The file store: atomic saves, refusals that leave the file untouched,
//! the owner's lock, and the temp file's safety.

use std::fs;

use super::*;
use crate::state::NodePhase;

fn sample() -> MigrationState {
    let mut s = MigrationState::default();
    s.transition("node-a", NodePhase::Shadow, "apply").unwrap();
    s
}

#[test]
fn missing_file_is_a_fresh_start_and_saves_are_complete_and_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&format!("file:{}/m.json", dir.path().display())).unwrap();
    assert!(store.read().unwrap().is_none());
    let first = MigrationState::default();
    store.write(&first).unwrap();
    let second = sample();
    store.write(&second).unwrap();
    assert_eq!(store.read().unwrap(), Some(second));
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        ["m.json", "m.json.lock"],
        "a temp file was left behind"
    );
    let text = fs::read_to_string(dir.path().join("m.json")).unwrap();
    assert!(text.contains("\"schema\": 1"), "{text}");
    assert!(text.ends_with("}\n"));
}

#[test]
fn corrupt_file_is_refused_named_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    for bad in [
        &b"{\"schema\": 1, \"phase\": "[..],
        b"[1,2]",
        b"{\"schema\":1}",
    ] {
        fs::write(&path, bad).unwrap();
        let store = FileStore::new(&path);
        let err = store.read().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("left untouched"), "{msg}");
        assert_eq!(fs::read(&path).unwrap(), bad);
    }
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    let mut v = serde_json::to_value(sample()).unwrap();
    v["schema"] = 2.into();
    v["something_new"] = true.into();
    let text = v.to_string();
    fs::write(&path, &text).unwrap();
    let err = FileStore::new(&path).read().unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer"));
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn a_second_owner_is_refused_naming_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("file:{}/m.json", dir.path().display());
    let first = open_store(&spec).unwrap();
    let lock = fs::read_to_string(first.lock_path()).unwrap();
    assert_eq!(lock.trim(), std::process::id().to_string());
    let err = open_store(&spec).unwrap_err();
    let pid = std::process::id();
    assert!(
        matches!(err, StoreError::Locked { pid: Some(p), .. } if p == pid),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("pid {pid}")), "{err}");
    drop(first);
    open_store(&spec).expect("the lock is released with the store");
}

#[test]
fn the_temp_file_is_private_and_never_follows_a_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    let victim = dir.path().join("victim");
    fs::write(&victim, "keep").unwrap();
    let tmp = dir
        .path()
        .join(format!(".m.json.tmp.{}", std::process::id()));
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    let store = FileStore::new(&path);
    let err = store.write(&sample()).unwrap_err();
    assert!(err.to_string().contains("temp file"), "{err}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    fs::remove_file(&tmp).unwrap();
    store.write(&sample()).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "state file mode {mode:o}");
}

#[test]
fn store_strings_are_file_or_kubernetes_and_etcd_says_what_to_use() {
    let err = open_store("etcd://127.0.0.1:2379/sshbridge").unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("kubernetes:NAMESPACE/NAME") && shown.contains("file:PATH"),
        "{shown}"
    );
    assert!(open_store("file:").is_err());
    assert!(open_store("/var/lib/x.json").is_err());
    assert_eq!(
        StoreSpec::parse("kubernetes:kube-system/sshbridge-migration").unwrap(),
        StoreSpec::Kubernetes {
            namespace: "kube-system".into(),
            name: "sshbridge-migration".into()
        }
    );
    for bad in [
        "kubernetes:",
        "kubernetes:kube-system",
        "kubernetes:/name",
        "kubernetes:ns/",
        "kubernetes:Kube/x",
        "kubernetes:ns/a/b",
    ] {
        assert!(StoreSpec::parse(bad).is_err(), "{bad} accepted");
    }
}
