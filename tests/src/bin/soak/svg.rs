//! The soak's plot: one panel per series (RSS, fds, threads, p99 dial
//! latency) over time, as a plain SVG polyline each.

use std::fmt::Write as _;

use crate::sample::Sample;

const W: f64 = 760.0;
const PANEL_H: f64 = 150.0;
const LEFT: f64 = 90.0;
const TOP: f64 = 30.0;

/// A panel's title and its value in a sample (none: no point).
type Series = (&'static str, fn(&Sample) -> Option<f64>);

const PANELS: [Series; 4] = [
    ("RSS (MiB)", |s| Some(s.rss_kib as f64 / 1024.0)),
    ("open fds", |s| Some(s.fds as f64)),
    ("threads", |s| Some(s.threads as f64)),
    ("p99 dial (ms)", |s| s.p99_dial_ms),
];

pub fn plot(samples: &[Sample]) -> String {
    let panels = PANELS;
    let height = TOP + panels.len() as f64 * (PANEL_H + 40.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="18" font-size="14">sshbridge soak: {} samples</text>"#,
        samples.len()
    );
    let t_max = samples.last().map_or(1.0, |s| s.t_s.max(1.0));
    for (i, (title, f)) in panels.iter().enumerate() {
        let y0 = TOP + i as f64 * (PANEL_H + 40.0) + 20.0;
        let points: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|s| Some((s.t_s, f(s)?)))
            .collect();
        let max = points.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.1;
        let plot_w = W - LEFT - 20.0;
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{}">{title} (max {:.1})</text><rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#888"/>"##,
            y0 - 5.0,
            max / 1.1
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">0</text><text x="{}" y="{}" text-anchor="end">{:.1}</text><text x="{}" y="{}" text-anchor="end">{:.0}s</text>"#,
            LEFT - 5.0,
            y0 + PANEL_H,
            LEFT - 5.0,
            y0 + 10.0,
            max,
            W - 20.0,
            y0 + PANEL_H + 14.0,
            t_max
        );
        let line: Vec<String> = points
            .iter()
            .map(|(t, v)| {
                format!(
                    "{:.1},{:.1}",
                    LEFT + t / t_max * plot_w,
                    y0 + PANEL_H - v / max * PANEL_H
                )
            })
            .collect();
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{}"/>"##,
            line.join(" ")
        );
    }
    out.push_str("</svg>\n");
    out
}
