//! Tables for people (`-o table`, the default) and JSON for scripts
//! (`-o json`), for both a report and a diff.

use std::io::IsTerminal;
use std::time::Duration;

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};

use super::diff::ms;
use super::{CertificateReport, Diff, PathState, Report};

/// Widest LAST ERROR cell; longer errors are cut with `...`.
const MAX_ERROR: usize = 48;

/// Whether to colour output: stdout is a terminal and `NO_COLOR` is unset
/// (or empty).
pub fn use_colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The report as a table: a summary line, then one row per node and path.
pub fn report_table(r: &Report, colour: bool) -> String {
    let t = &r.totals;
    let mut out = format!(
        "bridge {} (sshbridge {}), up {}, report of {}\n\
         {} node{}, {} path{} up, {} down, {} open stream{}, {} dial{} ok, {} failed\n\n",
        r.bridge.id,
        r.bridge.version,
        compact(Duration::from_secs(r.bridge.uptime_seconds)),
        r.generated_at,
        t.nodes,
        plural(t.nodes),
        t.paths_up,
        plural(t.paths_up),
        t.paths_down,
        t.open_streams,
        plural(t.open_streams),
        t.dials_ok,
        plural(t.dials_ok),
        t.dials_failed,
    );
    let header = [
        "NODE",
        "ROUTE",
        "PATH",
        "STATE",
        "SINCE",
        "P50",
        "P99",
        "FAIL%",
        "RECONNECTS",
        "STREAMS",
        "BYTES OUT/IN",
        "LAST ERROR",
    ];
    let mut t = table(&header, colour);
    for node in &r.nodes {
        for (kind, p) in node.paths.iter() {
            let mut state = Cell::new(p.state);
            if colour {
                state = state.fg(state_colour(p.state));
            }
            t.add_row(vec![
                Cell::new(&node.name),
                Cell::new(node.route),
                Cell::new(kind),
                state,
                Cell::new(
                    p.since
                        .as_deref()
                        .map_or("-".into(), |s| age(s, &r.generated_at)),
                ),
                Cell::new(p.probe.p50_ms.map_or("-".into(), ms)),
                Cell::new(p.probe.p99_ms.map_or("-".into(), ms)),
                Cell::new(percent(p.probe.failure_ratio)),
                Cell::new(p.reconnects),
                Cell::new(p.open_streams),
                Cell::new(format!(
                    "{}/{}",
                    bytes(p.bytes_sent),
                    bytes(p.bytes_received)
                )),
                Cell::new(p.last_error.as_deref().map_or("-".into(), truncate)),
            ]);
        }
    }
    out.push_str(&table_text(&t));
    let modes: Vec<String> = r
        .nodes
        .iter()
        .filter_map(|n| {
            let k = n.paths.konnectivity.as_ref()?;
            let mode = k.flow_control.as_deref()?;
            Some(match k.agents {
                Some(a) => format!("{} {mode} ({a} agent{})", n.name, plural(a)),
                None => format!("{} {mode}", n.name),
            })
        })
        .collect();
    if !modes.is_empty() {
        out.push_str(&format!(
            "\nkonnectivity flow control: {}\n",
            modes.join(", ")
        ));
    }
    if let Some(inv) = &r.inventory {
        out.push_str(&crate::inventory::table(inv));
    }
    if let Some(b) = &r.bridges {
        out.push_str(&crate::bridges::table(b));
    }
    if let Some(c) = &r.ssh_certificate {
        out.push('\n');
        out.push_str(&certificate_line(c));
    }
    out
}

/// One line for the report table: which certificate, when it expires, and
/// what to do when that is soon.
fn certificate_line(c: &CertificateReport) -> String {
    let left = compact(std::time::Duration::from_secs(c.seconds_left));
    let mut line = format!(
        "ssh certificate \"{}\" (serial {}, principals {}) expires {} (in {left})",
        c.key_id,
        c.serial,
        c.principals.join(","),
        c.valid_before
    );
    if c.seconds_left == 0 {
        line = format!(
            "ssh certificate \"{}\" (serial {}) EXPIRED at {}: new sessions cannot log in; issue a new one",
            c.key_id, c.serial, c.valid_before
        );
    } else if c.expiring {
        line.push_str(": EXPIRING, less than ssh.certificate_warn_before left; issue a new one");
    }
    line.push('\n');
    line
}

/// The diff as a table of what changed, then the one-line verdict.
pub fn diff_table(d: &Diff, colour: bool) -> String {
    let mut out = format!(
        "comparing {} nodes: before {}, after {}\n\n",
        d.nodes_compared, d.before_generated_at, d.after_generated_at
    );
    if !d.changes.is_empty() {
        let header = ["NODE", "PATH", "CHANGE", "BEFORE", "AFTER", "KIND"];
        let mut t = table(&header, colour);
        for c in &d.changes {
            let mut kind = Cell::new(if c.is_regression {
                "REGRESSION"
            } else {
                "info"
            });
            if colour && c.is_regression {
                kind = kind.fg(Color::Red);
            }
            t.add_row(vec![
                Cell::new(&c.node),
                Cell::new(c.path.as_deref().unwrap_or("-")),
                Cell::new(c.what.as_str()),
                Cell::new(c.before.as_deref().unwrap_or("-")),
                Cell::new(c.after.as_deref().unwrap_or("-")),
                kind,
            ]);
        }
        out.push_str(&table_text(&t));
        out.push('\n');
    }
    if colour {
        let c = if d.is_regression() {
            "\x1b[1;31m"
        } else {
            "\x1b[32m"
        };
        out.push_str(&format!("{c}{}\x1b[0m\n", d.verdict));
    } else {
        out.push_str(&d.verdict);
        out.push('\n');
    }
    out
}

/// The diff as pretty JSON with a trailing newline.
pub fn diff_json(d: &Diff) -> String {
    let mut text = serde_json::to_string_pretty(d).expect("a diff always serializes");
    text.push('\n');
    text
}

/// A table in the house style: no borders, columns two spaces apart,
/// header in capitals; wrapped to the terminal's width when stdout is a
/// terminal, and coloured only when `colour` says so (which follows
/// `NO_COLOR`, see [`use_colour`]).
pub fn table(header: &[&str], colour: bool) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    if colour {
        t.enforce_styling();
    } else {
        t.force_no_tty();
    }
    // One space of padding on each side of every column; none before the
    // first or after the last, so lines start at the margin.
    let last = header.len().saturating_sub(1);
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((u16::from(i > 0), u16::from(i < last)));
    }
    t
}

/// The table as text: one line per row, trailing blanks trimmed, ending
/// in a newline.
pub fn table_text(t: &Table) -> String {
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn state_colour(s: PathState) -> Color {
    match s {
        PathState::Up => Color::Green,
        PathState::Degraded => Color::Yellow,
        PathState::Unknown | PathState::Parked => Color::DarkGrey,
        PathState::Down => Color::Red,
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// How long before `now` the time `since` was, e.g. `3m12s`; the raw text
/// when either does not parse.
fn age(since: &str, now: &str) -> String {
    match (
        humantime::parse_rfc3339(since),
        humantime::parse_rfc3339(now),
    ) {
        (Ok(s), Ok(n)) => compact(n.duration_since(s).unwrap_or_default()),
        _ => since.to_string(),
    }
}

/// The two largest units of a duration: `45s`, `3m12s`, `2h5m`, `4d3h`.
pub(crate) fn compact(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match () {
        _ if days > 0 => format!("{days}d{hours}h"),
        _ if hours > 0 => format!("{hours}h{mins}m"),
        _ if mins > 0 => format!("{mins}m{secs}s"),
        _ => format!("{secs}s"),
    }
}

fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p == p.trunc() {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Binary units, one decimal from KiB up.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

fn truncate(s: &str) -> String {
    let one_line = s.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= MAX_ERROR {
        return one_line;
    }
    let cut: String = one_line.chars().take(MAX_ERROR - 3).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_as_people_expect() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0MiB");
        assert_eq!(compact(Duration::from_secs(192)), "3m12s");
        assert_eq!(compact(Duration::from_secs(90_000)), "1d1h");
        assert_eq!(percent(0.125), "12.5%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(age("2024-05-01T10:00:00Z", "2024-05-01T10:03:12Z"), "3m12s");
        assert_eq!(truncate(&"x".repeat(100)).chars().count(), MAX_ERROR);
    }

    /// Text without ANSI colour sequences.
    fn plain(s: &str) -> String {
        let mut out = String::new();
        let mut in_escape = false;
        for ch in s.chars() {
            match (in_escape, ch) {
                (false, '\x1b') => in_escape = true,
                (true, 'm') => in_escape = false,
                (true, _) => {}
                (false, _) => out.push(ch),
            }
        }
        out
    }

    #[test]
    fn colour_codes_do_not_break_alignment() {
        let mut t = table(&["N", "STATE", "Z"], true);
        t.add_row(vec![
            Cell::new("a"),
            Cell::new("up").fg(Color::Green),
            Cell::new("x"),
        ]);
        let out = table_text(&t);
        assert!(out.contains("\x1b["), "colour was asked for: {out:?}");
        let lines: Vec<String> = out.lines().map(plain).collect();
        let z_header = lines[0].find('Z').unwrap();
        assert_eq!(lines[1].find('x'), Some(z_header), "{out:?}");
    }

    #[test]
    fn no_colour_means_no_escape_codes_and_two_spaces_between_columns() {
        let mut t = table(&["NODE", "STATE"], false);
        t.add_row(vec![Cell::new("node-a"), Cell::new("up").fg(Color::Green)]);
        assert_eq!(table_text(&t), "NODE    STATE\nnode-a  up\n");
    }
}
