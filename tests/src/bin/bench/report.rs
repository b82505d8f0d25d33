//! Result rows, the printed table and `target/bench/report.json`.

use std::path::Path;

use serde_json::{json, Value};

/// Which way a row's target goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// `value >= target` meets it.
    AtLeast,
    /// `value <= target` meets it.
    AtMost,
}

/// What a row's target is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// The measured value itself.
    Value,
    /// The ratio value / baseline.
    Ratio,
}

/// One measured (or honestly unmeasured) result.
#[derive(Debug, Clone)]
pub struct Row {
    /// Group, e.g. `throughput`.
    pub group: String,
    /// What was measured, e.g. `1 stream, chacha20-poly1305`.
    pub name: String,
    /// Unit of `value` and `baseline`.
    pub unit: String,
    /// The bridge's number; `None` when not measured.
    pub value: Option<f64>,
    /// The comparison's number (OpenSSH, direct), if the row has one.
    pub baseline: Option<f64>,
    /// What the baseline is (`ssh -L`, `direct`).
    pub baseline_name: String,
    /// Target and what it applies to.
    pub target: Option<(Goal, On, f64)>,
    /// Why the row has no value, or what to know when reading it.
    pub note: String,
}

impl Row {
    /// A measured row without baseline or target.
    pub fn new(group: &str, name: &str, unit: &str, value: f64) -> Self {
        Row {
            group: group.into(),
            name: name.into(),
            unit: unit.into(),
            value: Some(value),
            baseline: None,
            baseline_name: String::new(),
            target: None,
            note: String::new(),
        }
    }

    /// A row that was not measured, saying why.
    pub fn missing(group: &str, name: &str, unit: &str, why: &str) -> Self {
        let mut r = Row::new(group, name, unit, 0.0);
        r.value = None;
        r.note = why.into();
        r
    }

    /// Adds a baseline.
    pub fn vs(mut self, what: &str, baseline: f64) -> Self {
        self.baseline_name = what.into();
        self.baseline = Some(baseline);
        self
    }

    /// Adds a target.
    pub fn target(mut self, goal: Goal, on: On, target: f64) -> Self {
        self.target = Some((goal, on, target));
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: &str) -> Self {
        self.note = note.into();
        self
    }

    /// value / baseline.
    pub fn ratio(&self) -> Option<f64> {
        match (self.value, self.baseline) {
            (Some(v), Some(b)) if b > 0.0 => Some(v / b),
            _ => None,
        }
    }

    /// Whether the target is met; `None` without a target or a value.
    pub fn met(&self) -> Option<bool> {
        let (goal, on, target) = self.target?;
        let x = match on {
            On::Value => self.value?,
            On::Ratio => self.ratio()?,
        };
        Some(match goal {
            Goal::AtLeast => x >= target,
            Goal::AtMost => x <= target,
        })
    }

    fn target_text(&self) -> String {
        match self.target {
            None => "-".into(),
            Some((goal, on, t)) => format!(
                "{}{}{}",
                match on {
                    On::Value => "",
                    On::Ratio => "ratio ",
                },
                match goal {
                    Goal::AtLeast => ">=",
                    Goal::AtMost => "<=",
                },
                num(t)
            ),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "group": self.group,
            "name": self.name,
            "unit": self.unit,
            "value": self.value,
            "baseline": self.baseline,
            "baseline_name": self.baseline_name,
            "ratio": self.ratio(),
            "target": self.target.map(|_| self.target_text()),
            "met": self.met(),
            "note": self.note,
        })
    }
}

/// Compact number formatting for the table.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The table as printed to stdout.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "group", "measure", "unit", "bridge", "baseline", "vs", "ratio", "target", "met",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        cells.push(vec![
            r.group.clone(),
            r.name.clone(),
            r.unit.clone(),
            r.value.map_or("n/a".into(), num),
            r.baseline.map_or("-".into(), num),
            if r.baseline_name.is_empty() {
                "-".into()
            } else {
                r.baseline_name.clone()
            },
            r.ratio().map_or("-".into(), |x| format!("{x:.2}")),
            r.target_text(),
            match r.met() {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "-".into(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (n, row) in cells.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    let notes: Vec<&Row> = rows.iter().filter(|r| !r.note.is_empty()).collect();
    if !notes.is_empty() {
        out.push_str("\nnotes:\n");
        for r in notes {
            out.push_str(&format!("  {} / {}: {}\n", r.group, r.name, r.note));
        }
    }
    out
}

/// The machine the run happened on.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({ "nproc": nproc, "cpu_model": model, "kernel": kernel.trim() })
}

/// Writes the JSON report.
pub fn write_json(path: &Path, header: Value, rows: &[Row]) -> anyhow::Result<()> {
    let mut doc = header;
    doc["rows"] = Value::Array(rows.iter().map(Row::to_json).collect());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")?;
    Ok(())
}
