//! One function per section: defaults, value parsing, in-section rules.

use super::ssh_limits::{sessions_per_node, stream_window};
use super::Ctx;
use crate::model::{Backoff, BatchSize, Bridge, Egress, Health, Migration, Ssh, TlsListener};
use crate::raw::{
    RawBackoff, RawBridge, RawEgress, RawHealth, RawMigration, RawSsh, RawTlsListener,
};
use crate::units::{self, Problem};

/// Egress socket used when no frontend is configured.
const DEFAULT_EGRESS_UDS: &str = "/run/sshbridge/egress.sock";

pub(super) fn bridge(cx: &mut Ctx<'_>, raw: &RawBridge) -> Bridge {
    let id = match &raw.id {
        Some(v) if v.get_ref().trim().is_empty() => {
            let p = Problem {
                message: "is empty".into(),
                hint: Some(
                    "give this bridge a name, or remove the key to use the host name".into(),
                ),
            };
            cx.report(&v.span(), "bridge.id", p);
            String::new()
        }
        Some(v) => v.get_ref().clone(),
        None => hostname().unwrap_or_else(|| {
            let span = cx.d.section_span("bridge");
            let p = Problem {
                message: "not set, and the host name cannot be read".into(),
                hint: Some("set [bridge] id".into()),
            };
            cx.report(&span, "bridge.id", p);
            String::new()
        }),
    };
    Bridge { id }
}

/// The host name, as `gethostname(2)` reports it.
fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|s| !s.is_empty())
}

pub(super) fn egress(cx: &mut Ctx<'_>, raw: &RawEgress) -> Egress {
    let any_frontend =
        raw.http_connect_uds.is_some() || raw.http_connect_tcp.is_some() || raw.grpc_uds.is_some();
    let http_connect_uds = match &raw.http_connect_uds {
        Some(v) => Some(cx.path(v.get_ref())),
        None if !any_frontend => Some(DEFAULT_EGRESS_UDS.into()),
        None => None,
    };
    let http_connect_tcp = raw.http_connect_tcp.as_ref().map(|t| tls_listener(cx, t));
    let grpc_uds = raw.grpc_uds.as_ref().map(|v| cx.path(v.get_ref()));
    let service_cidrs = raw
        .service_cidrs
        .iter()
        .flatten()
        .filter_map(|v| {
            units::cidr(v.get_ref())
                .map_err(|p| cx.report(&v.span(), "egress.service_cidrs", p))
                .ok()
        })
        .collect();
    Egress {
        http_connect_uds,
        http_connect_tcp,
        grpc_uds,
        dial_timeout: cx.duration(
            "egress.dial_timeout",
            raw.dial_timeout.as_ref(),
            "10s",
            false,
        ),
        service_cidrs,
        max_request_head: cx.size(
            "egress.max_request_head",
            raw.max_request_head.as_ref(),
            8 << 10,
        ),
        request_head_timeout: cx.duration(
            "egress.request_head_timeout",
            raw.request_head_timeout.as_ref(),
            "10s",
            false,
        ),
        max_tls_handshakes: cx.count(
            "egress.max_tls_handshakes",
            raw.max_tls_handshakes.as_ref(),
            64,
            1,
        ) as usize,
        tls_handshake_timeout: cx.duration(
            "egress.tls_handshake_timeout",
            raw.tls_handshake_timeout.as_ref(),
            "10s",
            false,
        ),
        grpc_max_concurrent_streams: cx.count(
            "egress.grpc_max_concurrent_streams",
            raw.grpc_max_concurrent_streams.as_ref(),
            4096,
            1,
        ),
        // Off by default: `kubectl logs -f` may be silent for hours.
        stream_idle_timeout: Some(cx.duration(
            "egress.stream_idle_timeout",
            raw.stream_idle_timeout.as_ref(),
            "0s",
            true,
        ))
        .filter(|d| !d.is_zero()),
    }
}

fn tls_listener(cx: &mut Ctx<'_>, raw: &RawTlsListener) -> TlsListener {
    const K: &str = "egress.http_connect_tcp";
    let listen = units::socket_addr(raw.listen.get_ref()).unwrap_or_else(|p| {
        cx.report(&raw.listen.span(), &format!("{K}.listen"), p);
        ([127, 0, 0, 1], 8131).into()
    });
    TlsListener {
        listen,
        cert: cx.file("egress", &format!("{K}.cert"), Some(&raw.cert), "", false),
        key: cx.file("egress", &format!("{K}.key"), Some(&raw.key), "", true),
        client_ca: cx.file(
            "egress",
            &format!("{K}.client_ca"),
            Some(&raw.client_ca),
            "",
            false,
        ),
    }
}

pub(super) fn ssh(cx: &mut Ctx<'_>, raw: &RawSsh) -> Ssh {
    let user = Ctx::string(raw.user.as_ref(), "sshbridge");
    if let Some(v) = raw.user.as_ref().filter(|v| v.get_ref().trim().is_empty()) {
        let p = Problem {
            message: "is empty".into(),
            hint: Some("give the remote user, or remove the key for \"sshbridge\"".into()),
        };
        cx.report(&v.span(), "ssh.user", p);
    }
    Ssh {
        user,
        identity: cx.file(
            "ssh",
            "ssh.identity",
            raw.identity.as_ref(),
            "/etc/sshbridge/id_ed25519",
            true,
        ),
        certificate: raw
            .certificate
            .as_ref()
            .map(|v| cx.file("ssh", "ssh.certificate", Some(v), "", false)),
        certificate_warn_before: cx.duration(
            "ssh.certificate_warn_before",
            raw.certificate_warn_before.as_ref(),
            DEFAULT_CERTIFICATE_WARN_BEFORE,
            true,
        ),
        known_hosts: cx.file(
            "ssh",
            "ssh.known_hosts",
            raw.known_hosts.as_ref(),
            "/etc/sshbridge/known_hosts",
            false,
        ),
        port: cx.port("ssh.port", raw.port.as_ref(), 22),
        connect_timeout: cx.duration(
            "ssh.connect_timeout",
            raw.connect_timeout.as_ref(),
            "10s",
            false,
        ),
        keepalive_interval: cx.duration(
            "ssh.keepalive_interval",
            raw.keepalive_interval.as_ref(),
            "5s",
            false,
        ),
        keepalive_max: cx.count("ssh.keepalive_max", raw.keepalive_max.as_ref(), 3, 1),
        backoff: backoff(cx, &raw.backoff),
        max_concurrent_handshakes: cx.count(
            "ssh.max_concurrent_handshakes",
            raw.max_concurrent_handshakes.as_ref(),
            64,
            1,
        ) as usize,
        max_stream_buffer: stream_window(cx, raw),
        max_stream_chunks: cx.count(
            "ssh.max_stream_chunks",
            raw.max_stream_chunks.as_ref(),
            1024,
            2,
        ) as usize,
        sessions_per_node: sessions_per_node(cx, raw),
        threads: cx.count("ssh.threads", raw.threads.as_ref(), 0, 0) as usize,
    }
}

/// `[ssh] certificate_warn_before` when unset: a week's notice before a
/// certificate expires.
pub(crate) const DEFAULT_CERTIFICATE_WARN_BEFORE: &str = "7d";

fn backoff(cx: &mut Ctx<'_>, raw: &RawBackoff) -> Backoff {
    let initial = cx.duration("ssh.backoff.initial", raw.initial.as_ref(), "500ms", false);
    let max = cx.duration("ssh.backoff.max", raw.max.as_ref(), "30s", false);
    if initial > max {
        let span = raw
            .initial
            .as_ref()
            .or(raw.max.as_ref())
            .map_or_else(|| cx.d.section_span("ssh"), |v| v.span());
        let p = Problem {
            message: format!(
                "initial ({}) is longer than max ({})",
                humantime::format_duration(initial),
                humantime::format_duration(max)
            ),
            hint: Some("make initial <= max".into()),
        };
        cx.report(&span, "ssh.backoff", p);
    }
    Backoff {
        initial,
        max,
        multiplier: cx.number(
            "ssh.backoff.multiplier",
            raw.multiplier.as_ref(),
            2.0,
            |m| m.is_finite() && m >= 1.0,
            "at least 1.0",
        ),
        jitter: cx.number(
            "ssh.backoff.jitter",
            raw.jitter.as_ref(),
            0.2,
            |j| (0.0..=1.0).contains(&j),
            "between 0.0 and 1.0",
        ),
    }
}

pub(super) fn health(cx: &mut Ctx<'_>, raw: &RawHealth) -> Health {
    let kubelet_path = Ctx::string(raw.kubelet_path.as_ref(), "/healthz");
    if let Some(v) = raw
        .kubelet_path
        .as_ref()
        .filter(|v| !v.get_ref().starts_with('/'))
    {
        let p = Problem {
            message: format!("{:?} does not start with '/'", v.get_ref()),
            hint: Some("write an absolute URL path, e.g. \"/healthz\"".into()),
        };
        cx.report(&v.span(), "health.kubelet_path", p);
    }
    Health {
        interval: cx.duration("health.interval", raw.interval.as_ref(), "10s", false),
        kubelet_port: cx.port("health.kubelet_port", raw.kubelet_port.as_ref(), 10250),
        kubelet_path,
        kubelet_ca: raw
            .kubelet_ca
            .as_ref()
            .map(|v| cx.file("health", "health.kubelet_ca", Some(v), "", false)),
        down_after: cx.count("health.down_after", raw.down_after.as_ref(), 3, 1),
        up_after: cx.count("health.up_after", raw.up_after.as_ref(), 2, 1),
    }
}

pub(super) fn migration(cx: &mut Ctx<'_>, raw: &RawMigration, have_kubernetes: bool) -> Migration {
    let store = Ctx::string(raw.store.as_ref(), "file:/var/lib/sshbridge/migration.json");
    if let Some(v) = &raw.store {
        if let Some(p) = store_problem(v.get_ref(), have_kubernetes) {
            cx.report(&v.span(), "migration.store", p);
        }
    }
    let batch_size = match &raw.batch_size {
        None => BatchSize::Percent(10.0),
        Some(v) => units::batch_size(v.get_ref()).unwrap_or_else(|p| {
            cx.report(&v.span(), "migration.batch_size", p);
            BatchSize::Percent(10.0)
        }),
    };
    Migration {
        batch_size,
        shadow_probes: cx.count("migration.shadow_probes", raw.shadow_probes.as_ref(), 5, 1),
        max_failure_ratio: cx.number(
            "migration.max_failure_ratio",
            raw.max_failure_ratio.as_ref(),
            0.0,
            |r| (0.0..=1.0).contains(&r),
            "between 0.0 and 1.0",
        ),
        max_latency_ratio: cx.number(
            "migration.max_latency_ratio",
            raw.max_latency_ratio.as_ref(),
            2.0,
            |r| r.is_finite() && r > 0.0,
            "above 0",
        ),
        soak: cx.duration("migration.soak", raw.soak.as_ref(), "2m", true),
        leader_election: super::leader::leader_election(cx, raw, &store),
        store,
    }
}

/// What is wrong with a `[migration] store` string, if anything: it is
/// `file:PATH` (one bridge) or `kubernetes:NAMESPACE/NAME` (a ConfigMap,
/// for several bridges; needs `[kubernetes]`).
fn store_problem(s: &str, have_kubernetes: bool) -> Option<Problem> {
    let problem = |message: String, hint: &str| {
        Some(Problem {
            message,
            hint: Some(hint.into()),
        })
    };
    if let Some(path) = s.strip_prefix("file:") {
        return path
            .is_empty()
            .then(|| {
                problem(
                    "file: needs a path".into(),
                    "write \"file:/var/lib/sshbridge/migration.json\"",
                )
            })
            .flatten();
    }
    if let Some(rest) = s.strip_prefix("kubernetes:") {
        let dns_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let ok = rest.split_once('/').is_some_and(|(ns, name)| {
            dns_label(ns) && name.len() <= 253 && name.split('.').all(dns_label)
        });
        if !ok {
            return problem(
                format!("{s:?} is not kubernetes:NAMESPACE/NAME"),
                "write the ConfigMap's namespace and name in lower-case DNS form, e.g. \"kubernetes:kube-system/sshbridge-migration\"",
            );
        }
        if !have_kubernetes {
            return problem(
                format!("{s:?} needs a [kubernetes] section"),
                "add [kubernetes] with kubeconfig = \"PATH\", or an empty [kubernetes] for the in-cluster service account",
            );
        }
        return None;
    }
    let message = if s.starts_with("etcd://") {
        format!("unsupported store {s:?}: the etcd store was removed")
    } else {
        format!("unsupported store {s:?}")
    };
    problem(
        message,
        "write \"kubernetes:NAMESPACE/NAME\" (a ConfigMap; for several bridges on one control plane, highly available) or \"file:PATH\" (one bridge), e.g. \"file:/var/lib/sshbridge/migration.json\"",
    )
}
