//! Our Konnectivity path against upstream's (issue 20 goal 6): the same
//! clients, sink and echo server through the bridge + `sshbridge agent`,
//! and through upstream `proxy-server --mode=http-connect` (unix socket) +
//! `proxy-agent` v0.33.1, measured back to back in one run. Runs only when
//! `ANP_BIN` names the upstream binaries (docs/upstream.md says how to
//! build them); CI has none, so there the group is one row saying so.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use sshbridge_sim::pki::Pki;
use sshbridge_tests::upstream::{self, Mode as AnpMode, Site, UpstreamAgent, UpstreamServer};

use crate::bounds;
use crate::load::median;
use crate::load::{self, Samples, Sink, Via};
use crate::report::{Goal, On, Row};
use crate::Mode;

const GROUP: &str = "konn vs upstream";
const BASELINE: &str = "upstream v0.33.1";
/// The node name both agents announce (`host=`); dials go by address.
const NODE: &str = "bench-konn";
/// Bytes an echo client keeps sent but not yet echoed (as the konn rows).
const INFLIGHT: u64 = 1024 * 1024;

/// The row that says why the group did not run.
pub fn skipped() -> Row {
    Row::missing(
        GROUP,
        "all rows",
        "-",
        "skipped: ANP_BIN not set (docs/upstream.md builds proxy-server and proxy-agent v0.33.1)",
    )
}

/// What the comparison needs from the konn rows' setup.
pub struct Ours<'a> {
    /// The node's address (both agents dial targets on it).
    pub ip: IpAddr,
    /// The bulk sink.
    pub sink: &'a Sink,
    /// The echo server.
    pub echo: SocketAddr,
    /// The bridge's egress socket.
    pub egress: &'a Path,
    /// The bridge's and our agent's processes.
    pub pids: [u32; 2],
}

/// Starts upstream's server and agent and measures both paths in turn.
pub async fn run(anp: &Path, ours: Ours<'_>, dir: &Path, mode: Mode) -> anyhow::Result<Vec<Row>> {
    std::fs::create_dir_all(dir)?;
    let pki = Pki::new("sshbridge bench upstream CA")?;
    let ca_path = pki.write_ca(dir)?;
    let site = || Site {
        dir,
        pki: &pki,
        ca_path: &ca_path,
        verbosity: 0,
    };
    let server = UpstreamServer::start(anp, site(), AnpMode::HttpConnect).await?;
    let agent = UpstreamAgent::start_at(anp, site(), NODE, ours.ip, server.agent_addr).await?;
    server.wait_ready(Duration::from_secs(30)).await?;

    let via = |uds: &Path, target: SocketAddr| Via::Bridge {
        uds: uds.to_path_buf(),
        target: target.to_string(),
    };
    let (bulk_ours, bulk_up) = (
        via(ours.egress, ours.sink.addr),
        via(&server.uds, ours.sink.addr),
    );
    let (echo_ours, echo_up) = (via(ours.egress, ours.echo), via(&server.uds, ours.echo));
    let (warmup, window, rounds) = match mode {
        Mode::Quick => (Duration::from_millis(300), Duration::from_millis(1500), 1),
        Mode::Full => (Duration::from_millis(500), Duration::from_secs(4), 3),
    };
    let mut rows = Vec::new();

    // Bulk upload: neither side has end-to-end flow control, so either may
    // break it; a broken side is a note, not an error of the run.
    let (mut a, mut b, mut broke) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (via, out, who) in [(&bulk_ours, &mut a, "ours"), (&bulk_up, &mut b, "upstream")] {
            match load::throughput(via, ours.sink, 1, warmup, window).await {
                Ok(x) => out.push(x),
                Err(e) => broke.push(format!("{who}: {e:#}")),
            }
        }
    }
    rows.push(versus(
        "1 stream, bulk upload",
        "MiB/s",
        &a,
        &b,
        Some((Goal::AtLeast, 2.0)),
        &broke.join("; "),
    ));

    for streams in [1, 8] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            a.push(load::echo_throughput(&echo_ours, streams, INFLIGHT, warmup, window).await?);
            b.push(load::echo_throughput(&echo_up, streams, INFLIGHT, warmup, window).await?);
        }
        let goal = (streams == 1).then_some((Goal::AtLeast, 2.0));
        let name = format!("{streams} stream(s), echo 1 MiB in flight");
        rows.push(versus(&name, "MiB/s", &a, &b, goal, ""));
    }

    // More dials than the dial rows take: a p99 of 200 samples is their
    // second slowest, too noisy to compare two programs by.
    let (n1, n64) = match mode {
        Mode::Quick => (1000, 40),
        Mode::Full => (4000, 160),
    };
    for (conc, per) in [(1, n1), (64, n64)] {
        let (a, a_rate) = dials(&bulk_ours, conc, per).await?;
        let (b, b_rate) = dials(&bulk_up, conc, per).await?;
        let name = |q: &str| format!("dial {q}, concurrency {conc}");
        rows.push(versus(
            &name("p50"),
            "ms",
            &[a.ms(0.5)],
            &[b.ms(0.5)],
            None,
            "",
        ));
        let p99 = Some((Goal::AtMost, 1.0));
        rows.push(versus(
            &name("p99"),
            "ms",
            &[a.ms(0.99)],
            &[b.ms(0.99)],
            p99,
            "",
        ));
        if conc > 1 {
            let goal = Some((Goal::AtLeast, 2.0));
            rows.push(versus(
                &name("dials/s"),
                "1/s",
                &[a_rate],
                &[b_rate],
                goal,
                "",
            ));
        }
    }
    // Where a dial's CPU goes on each side (goal 2's rate on a machine
    // whose cores the clients, the target and both programs share).
    let theirs = [
        server
            .process
            .pid()
            .context("proxy-server is not running")?,
        agent.process.pid().context("proxy-agent is not running")?,
    ];
    rows.extend(
        bounds::konn_dial_cpu(
            GROUP,
            (ours.pids, &bulk_ours),
            (theirs, &bulk_up),
            BASELINE,
            mode,
        )
        .await?,
    );
    Ok(rows)
}

/// Dial latencies and the rate, `conc` clients doing `per` dials each.
async fn dials(via: &Via, conc: usize, per: usize) -> anyhow::Result<(Samples, f64)> {
    let t0 = std::time::Instant::now();
    let s = load::dial_latency(via, conc, per).await?;
    let rate = s.0.len() as f64 / t0.elapsed().as_secs_f64();
    Ok((s, rate))
}

/// A row of our median against upstream's; a side with no sample is a
/// row without a value (or without a baseline), with `note` saying why.
fn versus(
    name: &str,
    unit: &str,
    ours: &[f64],
    theirs: &[f64],
    goal: Option<(Goal, f64)>,
    note: &str,
) -> Row {
    let mut row = match ours {
        [] => Row::missing(GROUP, name, unit, note),
        xs => Row::new(GROUP, name, unit, median(xs.to_vec())).note(note),
    };
    if !theirs.is_empty() {
        row = row.vs(BASELINE, median(theirs.to_vec()));
    }
    match goal {
        Some((g, t)) => row.target(g, On::Ratio, t),
        None => row,
    }
}

/// The SSH path's dial rate against upstream's (goal 2 compares both of
/// our paths with the same upstream figure), from rows of this run.
pub fn ssh_dials_versus(rows: &[Row]) -> Option<Row> {
    let find = |group: &str, name: &str| {
        rows.iter()
            .find(|r| r.group == group && r.name == name)
            .and_then(|r| Some((r.value?, r.baseline)))
    };
    let (ssh, _) = find("dial ssh", "dials/s, concurrency 64")?;
    let (_, upstream) = find(GROUP, "dial dials/s, concurrency 64")?;
    Some(
        Row::new(GROUP, "ssh path: dials/s, concurrency 64", "1/s", ssh)
            .vs(BASELINE, upstream?)
            .target(Goal::AtLeast, On::Ratio, 2.0)
            .note("the SSH path's rate (dial ssh rows) against upstream's from this group"),
    )
}

/// Whether the upstream binaries are there.
pub fn anp() -> Option<std::path::PathBuf> {
    upstream::anp_bin()
}
