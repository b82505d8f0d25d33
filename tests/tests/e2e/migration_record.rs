//! The shared migration record (`[migration] store =
//! "kubernetes:NS/NAME"`) against a real kube-apiserver v1.20.2: a round
//! trip, optimistic concurrency between two writers, a follower's watch,
//! and a record deleted
//! or edited by hand refused, never overwritten.

use std::time::Instant;

use sshbridge_config::Kubernetes;
use sshbridge_kubeapi::record::KubeStore;
use sshbridge_migrate::{MigrationState, NodePhase, Store, StoreError};
use sshbridge_sim::pki::Pki;
use sshbridge_tests::inventory::api_only;

use crate::support::{record_watch_works, within};

const NS: &str = "kube-system";
const NAME: &str = "sshbridge-migration";
const OBJECT: &str = "configmap kube-system/sshbridge-migration";

fn state(nodes: &[(&str, NodePhase)]) -> MigrationState {
    let mut s = MigrationState::default();
    for (n, to) in nodes {
        s.transition(n, *to, "test").unwrap();
    }
    s
}

#[tokio::test]
async fn the_migration_record_has_one_winner_and_is_never_overwritten_blindly() -> anyhow::Result<()>
{
    within(180, async {
        let dir = tempfile::tempdir()?;
        let pki = Pki::new("record-e2e-ca")?;
        let ca = pki.write_ca(dir.path())?;
        let cp = api_only(&pki, &ca, &dir.path().join("cp")).await?;
        let t0 = Instant::now();
        let settings = Kubernetes {
            kubeconfig: Some(cp.kubeconfig().to_path_buf()),
            context: None,
        };
        let client = sshbridge_kubeapi::client(&settings).await?;
        let mut a = KubeStore::new(client.clone(), NS, NAME);
        let mut b = KubeStore::new(client, NS, NAME);

        // Round trip: nothing yet, then A's record, read back by B.
        anyhow::ensure!(a.load().await?.is_none(), "a record before any write");
        let first = state(&[("node-a", NodePhase::Shadow)]);
        a.save(&first).await?;
        anyhow::ensure!(b.load().await? == Some(first.clone()), "B reads A's record");

        // Both read; A writes; B's write names a stale version: conflict,
        // and the record is A's, not B's.
        let by_a = state(&[("node-a", NodePhase::Shadow), ("node-b", NodePhase::Shadow)]);
        let by_b = state(&[("node-c", NodePhase::Shadow)]);
        a.save(&by_a).await?;
        let stale = b.resource_version().map(str::to_owned);
        let err = b.save(&by_b).await.expect_err("a stale write was applied");
        anyhow::ensure!(
            matches!(err, StoreError::Conflict { .. })
                && err.to_string().contains(OBJECT)
                && err
                    .to_string()
                    .contains(&format!("resourceVersion {}", stale.unwrap_or_default())),
            "{err}"
        );
        anyhow::ensure!(a.load().await? == Some(by_a.clone()), "the record is A's");
        // A store that never read cannot create over an existing record.
        let mut fresh = KubeStore::new(sshbridge_kubeapi::client(&settings).await?, NS, NAME);
        let err = fresh.save(&by_b).await.expect_err("created over a record");
        anyhow::ensure!(err.is_conflict(), "{err}");
        // B reads again, decides, and then its write lands.
        anyhow::ensure!(
            b.load().await? == Some(by_a.clone()),
            "B rereads A's record"
        );
        b.save(&by_b).await?;
        anyhow::ensure!(
            a.load().await? == Some(by_b.clone()),
            "B's write after rereading"
        );
        // A follower watches the record rather than polling it.
        let woke = record_watch_works(&mut a, &mut b).await?;
        println!("a follower woke {woke:?} after a write to the record");

        // Deleted by hand: the next write is refused and the record is not
        // recreated (that would forget every node).
        let (ok, _, e) = cp.kubectl(&["-n", NS, "delete", "configmap", NAME]).await?;
        anyhow::ensure!(ok, "kubectl delete: {e}");
        let err = a
            .save(&by_a)
            .await
            .expect_err("a deleted record was recreated");
        anyhow::ensure!(
            matches!(err, StoreError::Deleted { .. })
                && err.to_string().contains(OBJECT)
                && err.to_string().contains("Restore it from a backup"),
            "{err}"
        );
        let (ok, _, _) = cp.kubectl(&["-n", NS, "get", "configmap", NAME]).await?;
        anyhow::ensure!(!ok, "the deleted record was recreated");

        // Edited into garbage by hand: reading it is refused with the
        // object and the fix; a write over it is refused too (its version
        // moved), and the garbage is left as it was.
        let (ok, _, e) = cp
            .kubectl(&[
                "-n",
                NS,
                "create",
                "configmap",
                NAME,
                "--from-literal=migration.json=garbage",
            ])
            .await?;
        anyhow::ensure!(ok, "kubectl create: {e}");
        let err = a.load().await.expect_err("garbage was read as a record");
        let shown = err.to_string();
        anyhow::ensure!(
            matches!(err, StoreError::RecordCorrupt { .. })
                && shown.contains(OBJECT)
                && shown.contains("not an sshbridge migration record")
                && shown.contains("kubectl delete configmap kube-system/sshbridge-migration"),
            "{shown}"
        );
        let err = a.save(&by_a).await.expect_err("garbage was overwritten");
        anyhow::ensure!(err.is_conflict(), "{err}");
        let (ok, out, e) = cp
            .kubectl(&[
                "-n",
                NS,
                "get",
                "configmap",
                NAME,
                "-o",
                "jsonpath={.data.migration\\.json}",
            ])
            .await?;
        anyhow::ensure!(
            ok && out == "garbage",
            "the garbage was changed: {out:?} {e}"
        );
        println!(
            "record checks took {:?} after the apiserver was ready",
            t0.elapsed()
        );
        Ok(())
    })
    .await
}
