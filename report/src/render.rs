//! Tables for people (`-o table`, the default) and JSON for scripts
//! (`-o json`), for both a report and a diff.

use std::io::IsTerminal;
use std::time::Duration;

use super::diff::ms;
use super::{Diff, PathState, Report};

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
    let mut rows = Vec::new();
    let mut states = Vec::new();
    for node in &r.nodes {
        for (kind, p) in node.paths.iter() {
            states.push(p.state);
            rows.push(vec![
                node.name.clone(),
                node.route.to_string(),
                kind.to_string(),
                p.state.to_string(),
                p.since
                    .as_deref()
                    .map_or("-".into(), |s| age(s, &r.generated_at)),
                p.probe.p50_ms.map_or("-".into(), ms),
                p.probe.p99_ms.map_or("-".into(), ms),
                percent(p.probe.failure_ratio),
                p.reconnects.to_string(),
                p.open_streams.to_string(),
                format!("{}/{}", bytes(p.bytes_sent), bytes(p.bytes_received)),
                p.last_error.as_deref().map_or("-".into(), truncate),
            ]);
        }
    }
    let paint = |row: usize, col: usize, cell: String| {
        if colour && col == 3 {
            format!("{}{cell}\x1b[0m", state_colour(states[row]))
        } else {
            cell
        }
    };
    out.push_str(&table(&header, &rows, paint));
    let modes: Vec<String> = r
        .nodes
        .iter()
        .filter_map(|n| {
            let mode = n.paths.konnectivity.as_ref()?.flow_control.as_deref()?;
            Some(format!("{} {mode}", n.name))
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
    out
}

/// The diff as a table of what changed, then the one-line verdict.
pub fn diff_table(d: &Diff, colour: bool) -> String {
    let mut out = format!(
        "comparing {} nodes: before {}, after {}\n\n",
        d.nodes_compared, d.before_generated_at, d.after_generated_at
    );
    if !d.changes.is_empty() {
        let header = ["NODE", "PATH", "CHANGE", "BEFORE", "AFTER", "KIND"];
        let rows: Vec<Vec<String>> = d
            .changes
            .iter()
            .map(|c| {
                vec![
                    c.node.clone(),
                    c.path.clone().unwrap_or_else(|| "-".into()),
                    c.what.as_str().to_string(),
                    c.before.clone().unwrap_or_else(|| "-".into()),
                    c.after.clone().unwrap_or_else(|| "-".into()),
                    if c.is_regression {
                        "REGRESSION"
                    } else {
                        "info"
                    }
                    .into(),
                ]
            })
            .collect();
        let paint = |row: usize, col: usize, cell: String| {
            if colour && col == 5 && d.changes[row].is_regression {
                format!("\x1b[31m{cell}\x1b[0m")
            } else {
                cell
            }
        };
        out.push_str(&table(&header, &rows, paint));
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

/// Left-aligned columns two spaces apart; `paint` may wrap a padded cell
/// in colour codes (widths are computed on the plain text).
fn table(
    header: &[&str],
    rows: &[Vec<String>],
    paint: impl Fn(usize, usize, String) -> String,
) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let mut s = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            s.push_str(&cell);
            if i < last {
                s.push_str(&" ".repeat(widths[i] - plain_len(&cell) + 2));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for (r, row) in rows.iter().enumerate() {
        let cells = row
            .iter()
            .enumerate()
            .map(|(c, cell)| paint(r, c, cell.clone()));
        out.push_str(&line(cells.collect()));
    }
    out
}

/// Length without ANSI colour sequences.
fn plain_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for ch in s.chars() {
        match (in_escape, ch) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

fn state_colour(s: PathState) -> &'static str {
    match s {
        PathState::Up => "\x1b[32m",
        PathState::Degraded => "\x1b[33m",
        PathState::Unknown => "\x1b[2m",
        PathState::Down => "\x1b[1;31m",
        PathState::Parked => "\x1b[2m",
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
fn compact(d: Duration) -> String {
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

    #[test]
    fn colour_codes_do_not_break_alignment() {
        let rows = vec![vec!["a".to_string(), "up".into(), "x".into()]];
        let out = table(&["N", "STATE", "Z"], &rows, |_, c, cell| {
            if c == 1 {
                format!("\x1b[32m{cell}\x1b[0m")
            } else {
                cell
            }
        });
        let lines: Vec<&str> = out.lines().collect();
        let z_header = lines[0].find('Z').unwrap();
        assert_eq!(plain_len(lines[1]) - 1, z_header, "{out:?}");
    }
}
