//! Rows 1-4 of the benchmark on the SSH path: the bridge and `ssh -N -L`
//! against the same OpenSSH sshd and the same sink, back to back.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sshbridge_sim::{keys, kubelet::Kubelet, pki::Pki};
use sshbridge_tests::{hostkeys, net, BridgeConfig, NodeEntry};
use tokio_util::sync::CancellationToken;

use crate::bounds::{self, per_gib};
use crate::daemon::{process_cpu, tree_cpu, Daemon};
use crate::interactive;
use crate::load::{self, median, Sink, Via};
use crate::openssh::{Forward, Sshd};
use crate::report::{Goal, On, Row};
use crate::sessions::{self, Measure};
use crate::Mode;

/// The two ciphers the issue asks for, in the order they are reported.
pub const CIPHERS: [&str; 2] = ["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com"];

/// One OpenSSH node: sshd offering one cipher, a sink on its address, and
/// an `ssh -L` forward to that sink.
struct Node {
    name: String,
    ip: IpAddr,
    sshd: Sshd,
    sink: Sink,
}

/// What the SSH-path run found besides rows.
pub struct Found {
    /// The rows.
    pub rows: Vec<Row>,
    /// Per node cipher: what sshd logged as negotiated.
    pub negotiated: Vec<(String, Vec<String>)>,
}

/// Bridge config with the operator defaults of `[ssh]`, probes off.
pub fn bridge_config(
    dir: &Path,
    identity: PathBuf,
    known_hosts: PathBuf,
    kubelet_port: u16,
    nodes: Vec<NodeEntry>,
) -> anyhow::Result<BridgeConfig> {
    std::fs::create_dir_all(dir)?;
    Ok(BridgeConfig {
        uds: dir.join("egress.sock"),
        dir: dir.to_path_buf(),
        tcp: None,
        admin_tcp: None,
        dial_timeout: "10s".into(),
        user: sshbridge_tests::cluster::current_user()?,
        identity,
        known_hosts,
        connect_timeout: "10s".into(),
        keepalive_interval: "5s".into(),
        keepalive_max: 3,
        backoff: ("500ms".into(), "30s".into()),
        max_stream_buffer: "2MiB".into(),
        extra_ssh_lines: Vec::new(),
        health_interval: "10s".into(),
        kubelet_port,
        kubelet_ca: None,
        down_after: 3,
        up_after: 2,
        extra_bridge_lines: Vec::new(),
        migration: None,
        nodes,
    })
}

/// Runs rows 1-4.
pub async fn run(bin: &Path, dir: &Path, mode: Mode) -> anyhow::Result<Found> {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    std::fs::create_dir_all(dir)?;
    let client = keys::generate_ed25519();
    let identity = dir.join("id_ed25519");
    keys::write_private_key(&identity, &client)?;
    let authorized = keys::authorized_keys_line(client.public_key());

    let mut nodes = Vec::new();
    let mut known_hosts = String::new();
    for cipher in CIPHERS {
        let ip = net::host(net::block(), 1);
        let short = cipher.split(['-', '@']).next().unwrap_or(cipher);
        let sshd = Sshd::start(ip, &dir.join(short), cipher, &authorized).await?;
        known_hosts.push_str(&format!(
            "{} {}\n",
            hostkeys::host_pattern(sshd.addr),
            sshd.host_key
        ));
        let sink = Sink::start(ip, stop.clone()).await?;
        nodes.push(Node {
            name: format!("bench-{short}"),
            ip,
            sshd,
            sink,
        });
    }
    let kh = dir.join("known_hosts");
    std::fs::write(&kh, &known_hosts)?;

    // The kubelet stand-in for the request-rate row lives on the first node.
    let pki = Pki::new("sshbridge bench CA")?;
    let kubelet_ip = nodes[0].ip;
    let cert = pki.issue_server(&[kubelet_ip], &[&nodes[0].name])?;
    let kubelet = Kubelet::start(
        tokio::net::TcpListener::bind((kubelet_ip, 0)).await?,
        nodes[0].name.clone(),
        pki.server_config(&cert)?,
        stop.clone(),
    )?;

    let entries = nodes
        .iter()
        .map(|n| NodeEntry {
            name: n.name.clone(),
            address: n.ip,
            ssh_address: n.sshd.addr,
            pod_cidrs: Vec::new(),
        })
        .collect();
    let config = bridge_config(
        &dir.join("bridge"),
        identity.clone(),
        kh.clone(),
        kubelet.local_addr().port(),
        entries,
    )?;
    let mut bridge = Daemon::start(bin, config.clone()).await?;
    bridge
        .wait_all_up(
            nodes.len(),
            0,
            Instant::now(),
            Duration::from_secs(30),
            || true,
        )
        .await?;
    let user = sshbridge_tests::cluster::current_user()?;

    let (warmup, window, rounds) = match mode {
        Mode::Quick => (Duration::from_millis(300), Duration::from_millis(1500), 1),
        Mode::Full => (Duration::from_millis(500), Duration::from_secs(4), 3),
    };
    let mut rows = Vec::new();
    let measure = Measure {
        warmup,
        window,
        rounds,
    };
    for (i, node) in nodes.iter().enumerate() {
        let forward = Forward::start(&node.sshd, &identity, &kh, &user, node.sink.addr).await?;
        if i == 0 {
            rows.extend(
                sessions::rows(
                    bin,
                    dir,
                    &config,
                    &node.name,
                    &node.sshd.cipher,
                    &node.sink,
                    &forward,
                    &measure,
                )
                .await?,
            );
        }
        let via_ssh = Via::Tcp(forward.local);
        let via_bridge = Via::Bridge {
            uds: bridge.egress().to_path_buf(),
            target: node.sink.addr.to_string(),
        };
        let mut counts = vec![1];
        if i == 0 || mode == Mode::Full {
            counts.extend([8, 64]);
        }
        for streams in counts {
            let (mut b, mut s) = (Vec::new(), Vec::new());
            // CPU seconds per GiB of each client (the sshd is the same).
            let (mut b_cpu, mut s_cpu) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let (c0, r0) = (process_cpu(forward.pid())?, node.sink.received());
                s.push(load::throughput(&via_ssh, &node.sink, streams, warmup, window).await?);
                s_cpu.push(per_gib(process_cpu(forward.pid())? - c0, &node.sink, r0));
                let (c0, r0) = (bridge.cpu()?, node.sink.received());
                b.push(load::throughput(&via_bridge, &node.sink, streams, warmup, window).await?);
                b_cpu.push(per_gib(bridge.cpu()? - c0, &node.sink, r0));
            }
            if streams == 1 {
                rows.push(
                    Row::new(
                        "cpu ssh",
                        &format!("CPU s per GiB, 1 stream, {}", node.sshd.cipher),
                        "s/GiB",
                        median(b_cpu),
                    )
                    .vs("ssh -N -L", median(s_cpu))
                    .target(Goal::AtMost, On::Ratio, 1.0)
                    .note("user + system time of the client process (the bridge, or ssh) over warmup and window, per GiB the sink received"),
                );
            }
            let name = format!("{streams} stream(s), {}", node.sshd.cipher);
            let mut row =
                Row::new("throughput ssh", &name, "MiB/s", median(b)).vs("ssh -N -L", median(s));
            if streams == 1 {
                row = row.target(Goal::AtLeast, On::Ratio, 1.0);
            }
            rows.push(row);
        }
        let pids = (bridge.pid() as u32, forward.pid(), node.sshd.pid());
        let (cipher, sink) = (&node.sshd.cipher, &node.sink);
        let via = (&via_bridge, &via_ssh);
        rows.extend(bounds::stream_rows(cipher, pids, via.0, via.1, sink, warmup, window).await?);
    }

    let via = Via::Bridge {
        uds: bridge.egress().to_path_buf(),
        target: nodes[0].sink.addr.to_string(),
    };
    rows.extend(dial_rows("dial ssh", &via, mode).await?);
    rows.extend(bounds::dial_cpu(&bridge, nodes[0].sshd.pid(), &via, mode).await?);

    let two = interactive::two_write_server(nodes[0].ip, stop.clone()).await?;
    let two_fwd = Forward::start(&nodes[0].sshd, &identity, &kh, &user, two).await?;
    rows.extend(
        interactive::measure("interactive ssh", two, two_fwd.local, bridge.egress(), mode).await?,
    );

    let tls = pki.client_config(None)?;
    let rate_window = match mode {
        Mode::Quick => Duration::from_secs(2),
        Mode::Full => Duration::from_secs(8),
    };
    let via_bridge = Via::Bridge {
        uds: bridge.egress().to_path_buf(),
        target: kubelet.local_addr().to_string(),
    };
    // CPU per request of each process on the way: the bench process (the
    // clients' TLS and the in-process kubelet), the bridge, and the node's
    // sshd (its per-connection processes), over the same window.
    let me = std::process::id();
    let c0 = process_cpu(me)?;
    let direct = load::https_rate(
        &Via::Tcp(kubelet.local_addr()),
        kubelet_ip,
        tls.clone(),
        8,
        rate_window,
    )
    .await?;
    let direct_own = per_request(process_cpu(me)? - c0, &direct);
    direct.check(mode, "straight to the kubelet")?;
    let (c0, b0, d0) = (
        process_cpu(me)?,
        bridge.cpu()?,
        tree_cpu(nodes[0].sshd.pid())?,
    );
    let through = load::https_rate(&via_bridge, kubelet_ip, tls, 8, rate_window).await?;
    let through_own = per_request(process_cpu(me)? - c0, &through);
    let through_bridge = per_request(bridge.cpu()? - b0, &through);
    let through_sshd = per_request(tree_cpu(nodes[0].sshd.pid())? - d0, &through);
    through.check(mode, "through the bridge")?;
    let note = format!(
        "GET /healthz, new CONNECT + TLS handshake per request, 8 at a time; errors: bridge {}, direct {}",
        through.errors, direct.errors
    );
    rows.push(
        Row::new("https ssh", "requests/s", "req/s", through.per_sec)
            .vs("direct", direct.per_sec)
            .note(&note),
    );
    rows.push(
        Row::new("https ssh", "p99 latency", "ms", through.latency.ms(0.99))
            .vs("direct", direct.latency.ms(0.99)),
    );
    let cpu_note = "user + system time over the window / requests served; 10 ms clock ticks";
    rows.push(
        Row::new(
            "https ssh",
            "CPU per request, clients + kubelet",
            "us",
            through_own,
        )
        .vs("direct", direct_own)
        .note(cpu_note),
    );
    rows.push(
        Row::new("https ssh", "CPU per request, bridge", "us", through_bridge).note(cpu_note),
    );
    rows.push(
        Row::new(
            "https ssh",
            "CPU per request, node sshd",
            "us",
            through_sshd,
        )
        .note(cpu_note),
    );

    let negotiated = nodes
        .iter()
        .map(|n| (n.name.clone(), n.sshd.negotiated()))
        .collect();
    bridge.stop().await;
    Ok(Found { rows, negotiated })
}

/// Microseconds of `cpu` per request `rate` served.
fn per_request(cpu: Duration, rate: &load::Rate) -> f64 {
    let served = rate.latency.0.len();
    if served > 0 {
        cpu.as_secs_f64() * 1e6 / served as f64
    } else {
        f64::NAN
    }
}

/// Dial latency rows of `group`: CONNECT -> 200 over `via`, p50/p99/max at
/// concurrency 1 and 64, and dials per second at 64. Issue 20's targets:
/// p99 <= 1 ms at concurrency 1; at 64, where each dial waits for the
/// others (p50 ~ 64 / dials per second), p99 <= 2x p50 (no tail of the
/// bridge's own) and the rate (compared with upstream's where measured).
/// At concurrency 1, 1,000 dials even in quick mode (about 0.2 ms each):
/// the p99 of 200 would be their second slowest.
pub async fn dial_rows(group: &str, via: &Via, mode: Mode) -> anyhow::Result<Vec<Row>> {
    // 64 clients x 100: about a second of dialing. With 10 per client the
    // rate was taken over 0.12 s, and two builds' rates differed by more
    // between runs than between the builds.
    let (n1, n64) = match mode {
        Mode::Quick => (1000, 100),
        Mode::Full => (2000, 100),
    };
    let mut rows = Vec::new();
    for (conc, per) in [(1, n1), (64, n64)] {
        let t0 = std::time::Instant::now();
        let s = load::dial_latency(via, conc, per).await?;
        let wall = t0.elapsed().as_secs_f64();
        let count = s.0.len();
        let p50 = s.ms(0.5);
        rows.push(Row::new(
            group,
            &format!("p50, concurrency {conc}"),
            "ms",
            p50,
        ));
        let mut p99 = Row::new(group, &format!("p99, concurrency {conc}"), "ms", s.ms(0.99))
            .note(&format!("{count} CONNECT -> 200 over an established path"));
        p99 = if conc == 1 {
            p99.target(Goal::AtMost, On::Value, 1.0)
        } else {
            p99.vs("p50", p50).target(Goal::AtMost, On::Ratio, 2.0)
        };
        rows.push(p99);
        rows.push(Row::new(
            group,
            &format!("max, concurrency {conc}"),
            "ms",
            s.ms(1.0),
        ));
        if conc > 1 {
            rows.push(
                Row::new(
                    group,
                    &format!("dials/s, concurrency {conc}"),
                    "1/s",
                    count as f64 / wall,
                )
                .note(&format!("{count} dials in {wall:.2} s")),
            );
        }
    }
    Ok(rows)
}
