//! The Prometheus text exposition format (version 0.0.4): escaping, number
//! formatting and the sample lines of one series.

use std::borrow::Cow;
use std::fmt::Write;

/// The `Content-Type` of [`crate::metrics::Registry::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label_value(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Escapes `# HELP` text: backslash and line feed (quotes stay as they are).
pub fn escape_help(help: &str) -> Cow<'_, str> {
    if !help.contains(['\\', '\n']) {
        return Cow::Borrowed(help);
    }
    Cow::Owned(help.replace('\\', "\\\\").replace('\n', "\\n"))
}

/// Formats a sample value the way Prometheus parses it: `+Inf`, `-Inf`,
/// `NaN`, integers without a fraction, everything else as Rust prints it
/// (shortest representation that round-trips).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Whether `name` is a valid metric or label name
/// (`[a-zA-Z_][a-zA-Z0-9_]*`; colons are reserved for recording rules).
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Writes the `# HELP` and `# TYPE` lines of a family.
pub fn write_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample line: `name{l1="v1",...,extra="x"} value`.
pub fn write_sample(
    out: &mut String,
    name: &str,
    labels: &[&'static str],
    values: &[String],
    extra: Option<(&str, &str)>,
    value: &str,
) {
    out.push_str(name);
    let pairs = labels
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .chain(extra);
    let mut first = true;
    for (label, v) in pairs {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{label}=\"{}\"", escape_label_value(v));
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label_value("node-a"), "node-a");
        assert_eq!(
            escape_label_value("a\\b\"c\nd"),
            "a\\\\b\\\"c\\nd",
            "each special character gets its own backslash escape"
        );
        let mut out = String::new();
        write_sample(&mut out, "m", &["node"], &["x\"y".into()], None, "1");
        assert_eq!(out, "m{node=\"x\\\"y\"} 1\n");
    }

    #[test]
    fn help_keeps_quotes_but_escapes_newlines() {
        assert_eq!(escape_help("say \"hi\"\\\nbye"), "say \"hi\"\\\\\\nbye");
    }

    #[test]
    fn values_use_prometheus_spellings() {
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.005), "0.005");
    }

    #[test]
    fn samples_without_labels_have_no_braces() {
        let mut out = String::new();
        write_sample(&mut out, "m", &[], &[], None, "2");
        write_sample(&mut out, "m_bucket", &[], &[], Some(("le", "+Inf")), "2");
        assert_eq!(out, "m 2\nm_bucket{le=\"+Inf\"} 2\n");
    }

    #[test]
    fn names_are_checked() {
        assert!(is_valid_name("sshbridge_tunnels"));
        assert!(!is_valid_name("9lives"));
        assert!(!is_valid_name("a-b"));
        assert!(!is_valid_name(""));
    }
}
