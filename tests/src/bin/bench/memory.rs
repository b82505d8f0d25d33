//! Row 6: bridge memory under 1,000 concurrent streams and after they
//! close, with diagnostics of where the memory that stays is: a second
//! round (does it grow again?), `Anonymous` from smaps_rollup, and glibc's
//! `malloc_trim(0)` called in the bridge through gdb (what the allocator
//! keeps for reuse vs what the bridge still holds).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::daemon::{metric_sum, Daemon};
use crate::load::{self, Via};
use crate::report::{Goal, On, Row};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Opens `streams` streams spread over `echoes`, echoes 16 KiB on each,
/// holds them all open, returns the bridge RSS at that peak, then closes
/// them and waits (bounded) until the bridge has no stream left; the bool
/// says whether it got there.
async fn round(
    bridge: &Daemon,
    echoes: &[SocketAddr],
    streams: usize,
) -> anyhow::Result<(u64, bool)> {
    let payload = vec![0x5au8; 16 * 1024];
    let mut open = Vec::with_capacity(streams);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..streams {
        let via = Via::Bridge {
            uds: bridge.egress().to_path_buf(),
            target: echoes[i % echoes.len()].to_string(),
        };
        let payload = payload.clone();
        set.spawn(async move {
            let mut s = via.open().await?;
            s.write_all(&payload).await?;
            let mut back = vec![0u8; payload.len()];
            s.read_exact(&mut back).await?;
            anyhow::ensure!(back == payload, "echo through the bridge came back altered");
            Ok(s)
        });
        // At most 64 dials in flight, as a busy apiserver might have.
        if set.len() >= 64 {
            if let Some(r) = set.join_next().await {
                open.push(r??);
            }
        }
    }
    while let Some(r) = set.join_next().await {
        open.push(r??);
    }
    let peak = bridge.rss()?;
    drop(open);
    let drained = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let text = bridge.metrics().await.unwrap_or_default();
            if metric_sum(&text, "sshbridge_streams_active") == 0.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .is_ok();
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok((peak, drained))
}

/// Calls glibc's `malloc_trim(0)` inside the bridge with gdb (bounded);
/// `None` when gdb is missing or could not attach.
async fn malloc_trim(bridge: &Daemon) -> Option<String> {
    let run = tokio::process::Command::new("gdb")
        .args(["-p", &bridge.pid().to_string()])
        .args(["-batch", "-nx", "-ex", "call (int) malloc_trim(0)"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "$1 = 1": something was released; 0: nothing could be.
    text.lines()
        .find_map(|l| l.strip_prefix("$1 = "))
        .map(|v| v.trim().to_string())
}

/// Row 6 on a bridge whose nodes are at `ips` (an echo server is started
/// on each); with `diagnose`, also a second round and `malloc_trim(0)`.
/// `label` is appended to the group name.
pub async fn under_load(
    bridge: &Daemon,
    ips: &[std::net::IpAddr],
    streams: usize,
    label: &str,
    diagnose: bool,
) -> anyhow::Result<Vec<Row>> {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let mut echoes = Vec::new();
    for ip in ips {
        echoes.push(load::echo_server(*ip, stop.clone()).await?);
    }
    let (before, anon_before) = (bridge.rss()?, bridge.anon()?);
    let (peak, drained) = round(bridge, &echoes, streams).await?;
    let (after, anon_after) = (bridge.rss()?, bridge.anon()?);
    let g = format!("memory ssh{label}");
    let mut rows = vec![
        Row::new(
            &g,
            &format!("peak RSS, {streams} streams"),
            "MiB",
            mib(peak),
        )
        .vs("idle before", mib(before))
        .note(&format!(
            "{streams} streams over {} nodes, 16 KiB echoed on each, all open at once",
            echoes.len()
        )),
        Row::new(&g, "RSS after they closed", "MiB", mib(after))
            .vs("idle before", mib(before))
            .target(Goal::AtMost, On::Ratio, 1.10)
            .note(&format!(
                "{}; smaps_rollup Anonymous {:.1} -> {:.1} MiB",
                if drained {
                    "measured 1 s after sshbridge_streams_active reached 0"
                } else {
                    "streams were still open 15 s after the clients closed them"
                },
                mib(anon_before),
                mib(anon_after)
            )),
    ];
    if !diagnose {
        return Ok(rows);
    }
    let Some((ret, trimmed)) = trimmed_rss(bridge).await? else {
        rows.push(Row::missing(
            &g,
            "diag: RSS after malloc_trim(0)",
            "MiB",
            "gdb missing or could not attach to the bridge",
        ));
        return Ok(rows);
    };
    rows.push(
        Row::new(&g, "diag: RSS after malloc_trim(0)", "MiB", mib(trimmed))
            .vs("idle before", mib(before))
            .note(&format!(
                "glibc malloc_trim(0) called in the bridge via gdb (returned {ret}): \
                 what it gives back was free memory glibc kept, not memory the bridge holds"
            )),
    );
    let (peak2, _) = round(bridge, &echoes, streams).await?;
    let after2 = bridge.rss()?;
    rows.push(
        Row::new(&g, "diag: RSS after a 2nd round closed", "MiB", mib(after2))
            .vs("after 1st round", mib(after))
            .note(&format!(
                "the same {streams} streams again (peak {:.1} MiB)",
                mib(peak2)
            )),
    );
    if let Some((_, trimmed2)) = trimmed_rss(bridge).await? {
        rows.push(
            Row::new(
                &g,
                "diag: malloc_trim(0) after 2nd round",
                "MiB",
                mib(trimmed2),
            )
            .vs("after 1st trim", mib(trimmed))
            .note("~1.0: the bridge holds nothing more per round of streams"),
        );
    }
    Ok(rows)
}

/// RSS after [`malloc_trim`] and its return value; `None` without gdb.
async fn trimmed_rss(bridge: &Daemon) -> anyhow::Result<Option<(String, u64)>> {
    let Some(ret) = malloc_trim(bridge).await else {
        return Ok(None);
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(Some((ret, bridge.rss()?)))
}
