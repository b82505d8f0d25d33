//! The record's encoding, without an apiserver: the size of a large
//! fleet's record, and refusals of objects that are not a record. The
//! round trip, conflicts and deletion are proven against a real
//! kube-apiserver in tests/tests/e2e/migration_record.rs.

use std::time::Duration;

use sshbridge_migrate::{compare, NodePhase, ProbeSample};

use super::*;

fn store() -> KubeStore {
    // Never sends a request: only the encoding is exercised. The client
    // needs a runtime to exist, which the tests provide.
    let config = kube::Config::new("https://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    KubeStore::new(client, "kube-system", "sshbridge-migration")
}

/// A fleet of `n` nodes as a finished rollout leaves them: four
/// transitions each at distinct times, and a shadow comparison with
/// distinct latencies (so compression gets no unfair help).
fn finished_fleet(n: usize) -> MigrationState {
    let mut s = MigrationState::default();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let why = [
        "rollout batch 12",
        "shadow comparison passed",
        "new streams go over konnectivity; watching for 10m",
        "soak clean: 0 failures of 312 streams",
    ];
    let phases = [
        NodePhase::Shadow,
        NodePhase::Cutover,
        NodePhase::Soak,
        NodePhase::Done,
    ];
    for i in 0..n {
        let node = format!("node-{i:05}.pool-a.example.internal");
        let mut t = 1_764_570_654 + 3 * i as u64;
        for (to, why) in phases.into_iter().zip(why) {
            s.transition(&node, to, why).unwrap();
        }
        let rec = s.nodes.get_mut(&node).unwrap();
        for h in &mut rec.history {
            t += 5 + next(900);
            h.at = format!(
                "2026-12-01T{:02}:{:02}:{:02}.{:03}Z",
                (t / 3600) % 24,
                (t / 60) % 60,
                t % 60,
                next(1000)
            );
        }
        rec.since = rec.history.last().unwrap().at.clone();
        let mut probes = |base: u64| -> Vec<ProbeSample> {
            (0..5)
                .map(|_| ProbeSample::ok(Duration::from_micros(base + next(20_000))))
                .collect()
        };
        let (ssh, k) = (probes(1_000), probes(900));
        rec.comparison = Some(compare(&ssh, &k, 0.0, 2.0));
    }
    s
}

#[tokio::test]
async fn the_record_of_5000_nodes_fits_one_configmap() {
    let s = finished_fleet(5000);
    let json = encode(&s).len();
    let cm = store().object_of(&s).unwrap();
    let gz = cm.binary_data.as_ref().unwrap()[DATA_KEY].0.len();
    println!(
        "record of 5000 finished nodes: {json} bytes of JSON ({} per node), {gz} bytes gzipped ({} per node)",
        json / 5000,
        gz / 5000
    );
    // A ConfigMap holds at most 1 MiB of data; etcd takes ~1.5 MiB.
    assert!(gz < 1024 * 1024 / 2, "{gz} bytes: over half a ConfigMap");
    // The same record back: every node's phase and history (floats are
    // compared by the shadow verdict only: serde_json's float parsing may
    // differ in the last bit, as with the file store).
    let back = store().state_of(&cm).unwrap();
    assert_eq!(back.nodes.len(), 5000);
    for (n, rec) in &s.nodes {
        let got = &back.nodes[n];
        assert_eq!((got.phase, &got.history), (rec.phase, &rec.history), "{n}");
        let verdict = |r: &sshbridge_migrate::state::NodeRecord| {
            r.comparison.as_ref().map(|c| (c.passed, c.reason.clone()))
        };
        assert_eq!(verdict(got), verdict(rec), "{n}");
    }
}

#[tokio::test]
async fn objects_that_are_not_a_record_are_refused_naming_the_object() {
    let st = store();
    let good = st.object_of(&finished_fleet(2)).unwrap();
    let mut foreign = ConfigMap {
        metadata: ObjectMeta {
            name: Some("sshbridge-migration".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("key".into(), "value".into())])),
        ..ConfigMap::default()
    };
    let err = st.state_of(&foreign).unwrap_err().to_string();
    assert!(
        err.contains("configmap kube-system/sshbridge-migration")
            && err.contains("not an sshbridge migration record")
            && err.contains("left untouched"),
        "{err}"
    );
    foreign.binary_data = Some(BTreeMap::from([(
        DATA_KEY.into(),
        ByteString(b"not gzip".to_vec()),
    )]));
    let err = st.state_of(&foreign).unwrap_err().to_string();
    assert!(err.contains("is not gzip"), "{err}");

    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"schema": 99}"#).unwrap();
    let mut newer = good.clone();
    newer.binary_data = Some(BTreeMap::from([(
        DATA_KEY.into(),
        ByteString(gz.finish().unwrap()),
    )]));
    let err = st.state_of(&newer).unwrap_err().to_string();
    assert!(err.contains("schema 99 is newer"), "{err}");

    // A gzip bomb (65 MiB of zeros in a few KB) is refused, not inflated.
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..65 {
        gz.write_all(&zeros).unwrap();
    }
    let mut bomb = good;
    bomb.binary_data = Some(BTreeMap::from([(
        DATA_KEY.into(),
        ByteString(gz.finish().unwrap()),
    )]));
    let err = st.state_of(&bomb).unwrap_err().to_string();
    assert!(err.contains("inflates to over"), "{err}");
}
