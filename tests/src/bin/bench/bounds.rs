//! Issue 20: what bounds the SSH path where it misses a goal. The CPU
//! each process on the way spends per dial (goal 2: dials per second)
//! and per GiB of one stream (goal 4: one stream against `ssh -N -L`,
//! the same sshd on the node side of both); on a machine whose cores
//! are all busy, the sum sets the rate.

use std::time::{Duration, Instant};

use crate::daemon::{process_cpu, tree_cpu, Daemon};
use crate::load::{self, Sink, Via};
use crate::report::Row;
use crate::Mode;

const CLIENTS: usize = 64;

/// CPU per dial of the bench process (the 64 dialing clients and the
/// target), the bridge and the node's sshd, 64 clients dialing back to
/// back over `via`, and the dial rate those costs allow on this machine's
/// cores.
pub async fn dial_cpu(
    bridge: &Daemon,
    sshd_pid: u32,
    via: &Via,
    mode: Mode,
) -> anyhow::Result<Vec<Row>> {
    let (us, rate) = per_dial(
        &[bridge.pid() as u32, sshd_pid],
        via,
        dials_per_client(mode),
    )
    .await?;
    let g = "dial ssh";
    let note = "user + system time over the run / dials; 10 ms clock ticks";
    Ok(vec![
        Row::new(g, "CPU per dial, clients + target", "us", us[0]).note(note),
        Row::new(g, "CPU per dial, bridge", "us", us[1]).note(note),
        Row::new(g, "CPU per dial, node sshd", "us", us[2]).note(note),
        Row::new(g, "dials/s the CPU per dial allows", "1/s", allowed(&us))
            .vs("measured", rate)
            .note(&format!(
                "{} cores / the three CPU costs per dial: the rate with every core busy",
                cores()
            )),
    ])
}

/// The same for a Konnectivity path on each side of `group`'s comparison:
/// the bench process, the server and the agent per dial, `ours` against
/// `theirs`, each `[server pid, agent pid]` with the egress to dial.
pub async fn konn_dial_cpu(
    group: &str,
    ours: ([u32; 2], &Via),
    theirs: ([u32; 2], &Via),
    baseline: &str,
    mode: Mode,
) -> anyhow::Result<Vec<Row>> {
    let per = dials_per_client(mode);
    let (a, a_rate) = per_dial(&ours.0, ours.1, per).await?;
    let (b, b_rate) = per_dial(&theirs.0, theirs.1, per).await?;
    let note = "user + system time over 64 clients dialing back to back / dials; 10 ms clock ticks";
    let mut rows = Vec::new();
    for (i, who) in ["clients + target", "server", "agent"].iter().enumerate() {
        rows.push(
            Row::new(group, &format!("CPU per dial, {who}"), "us", a[i])
                .vs(baseline, b[i])
                .note(note),
        );
    }
    rows.push(
        Row::new(group, "dials/s the CPU per dial allows", "1/s", allowed(&a))
            .vs(baseline, allowed(&b))
            .note(&format!(
                "{} cores / the three CPU costs per dial; this run measured {a_rate:.0} (ours) and {b_rate:.0} (upstream) dials/s",
                cores()
            )),
    );
    Ok(rows)
}

fn dials_per_client(mode: Mode) -> usize {
    match mode {
        Mode::Quick => 100,
        Mode::Full => 300,
    }
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// The dial rate that CPU costs per dial `us` allow with every core busy.
fn allowed(us: &[f64]) -> f64 {
    cores() * 1e6 / us.iter().sum::<f64>()
}

/// CPU per dial in microseconds of the bench process and of each process
/// tree in `others` while 64 clients dial `per` times each over `via`;
/// and the rate the dials went at.
async fn per_dial(others: &[u32], via: &Via, per: usize) -> anyhow::Result<(Vec<f64>, f64)> {
    let me = std::process::id();
    let cpu = || -> anyhow::Result<Vec<Duration>> {
        let mut v = vec![process_cpu(me)?];
        for &pid in others {
            v.push(tree_cpu(pid)?);
        }
        Ok(v)
    };
    let before = cpu()?;
    let t0 = Instant::now();
    let s = load::dial_latency(via, CLIENTS, per).await?;
    let wall = t0.elapsed().as_secs_f64();
    let after = cpu()?;
    let dials = s.0.len() as f64;
    let us = before
        .iter()
        .zip(after)
        .map(|(b, a)| (a - *b).as_secs_f64() * 1e6 / dials)
        .collect();
    Ok((us, dials / wall))
}

/// CPU per GiB the sink received of each process on a 1-stream run.
struct StreamCpu {
    client: f64,
    sshd: f64,
    bench: f64,
    mib_s: f64,
}

/// One 1-stream run over `via`, with the CPU of the client (the bridge or
/// `ssh`), of the node's sshd (all its processes) and of the bench process
/// (the writer and the sink) per GiB.
async fn stream_cpu(
    client: u32,
    sshd: u32,
    via: &Via,
    sink: &Sink,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<StreamCpu> {
    let me = std::process::id();
    let (c0, d0, m0) = (process_cpu(client)?, tree_cpu(sshd)?, process_cpu(me)?);
    let r0 = sink.received();
    let mib_s = load::throughput(via, sink, 1, warmup, window).await?;
    Ok(StreamCpu {
        client: per_gib(process_cpu(client)? - c0, sink, r0),
        sshd: per_gib(tree_cpu(sshd)? - d0, sink, r0),
        bench: per_gib(process_cpu(me)? - m0, sink, r0),
        mib_s,
    })
}

/// Where one stream's CPU goes, through the bridge and through `ssh -N -L`
/// (pids `bridge` and `ssh`) to the same sshd (`sshd`) and sink: CPU per
/// GiB of the node's sshd and of the bench process, and the rate the sum
/// with the client's allows on this machine's cores.
#[allow(clippy::too_many_arguments)]
pub async fn stream_rows(
    cipher: &str,
    (bridge, ssh, sshd): (u32, u32, u32),
    via_bridge: &Via,
    via_ssh: &Via,
    sink: &Sink,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Vec<Row>> {
    let s = stream_cpu(ssh, sshd, via_ssh, sink, warmup, window).await?;
    let b = stream_cpu(bridge, sshd, via_bridge, sink, warmup, window).await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let allows = |c: &StreamCpu| cores / (c.client + c.sshd + c.bench) * 1024.0;
    let g = "cpu ssh";
    let row = |what: &str, unit: &str, ours: f64, theirs: f64| {
        Row::new(g, &format!("1 stream, {cipher}: {what}"), unit, ours).vs("ssh -N -L", theirs)
    };
    Ok(vec![
        row("client CPU s per GiB", "s/GiB", b.client, s.client),
        row("node sshd CPU s per GiB", "s/GiB", b.sshd, s.sshd),
        row("bench (writer, sink) CPU s per GiB", "s/GiB", b.bench, s.bench),
        row("MiB/s the CPU per GiB allows", "MiB/s", allows(&b), allows(&s)).note(&format!(
            "{cores} cores / (client + node sshd + bench) CPU per GiB: the rate with every core busy; this run measured {:.0} (bridge) and {:.0} (ssh) MiB/s",
            b.mib_s, s.mib_s
        )),
    ])
}

/// CPU seconds per GiB: `cpu` spent while `sink` received the bytes since
/// `from`.
pub fn per_gib(cpu: Duration, sink: &Sink, from: u64) -> f64 {
    let gib = (sink.received() - from) as f64 / (1u64 << 30) as f64;
    if gib > 0.0 {
        cpu.as_secs_f64() / gib
    } else {
        f64::NAN
    }
}
