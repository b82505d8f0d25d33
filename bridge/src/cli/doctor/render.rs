//! The doctor's output: a plain aligned table per node, or JSON.

use comfy_table::{Cell, Color};
use sshbridge::report::render;

use super::NodeResult;

/// One table per node in the house style of `report` (comfy-table, no
/// borders, coloured on a terminal unless NO_COLOR), indented under the
/// node's line: `CHECK  RESULT  MESSAGE`.
pub fn table(results: &[NodeResult]) -> String {
    let colour = render::use_colour();
    let mut out = String::new();
    for n in results {
        out.push_str(&format!(
            "node {} (address {}, sshd {})\n",
            n.name, n.address, n.ssh_address
        ));
        let mut t = render::table(&["CHECK", "RESULT", "MESSAGE"], colour);
        for c in &n.checks {
            let hue = match c.result {
                "ok" => Color::Green,
                "warn" => Color::Yellow,
                "fail" => Color::Red,
                _ => Color::DarkGrey,
            };
            t.add_row(vec![
                Cell::new(c.check),
                Cell::new(c.result).fg(hue),
                Cell::new(&c.message),
            ]);
        }
        for line in render::table_text(&t).lines() {
            out.push_str(&format!("  {line}\n"));
        }
        out.push('\n');
    }
    let count = |r: &str| {
        results
            .iter()
            .flat_map(|n| n.checks.iter())
            .filter(|c| c.result == r)
            .count()
    };
    out.push_str(&format!(
        "{} node(s): {} ok, {} warn, {} fail, {} skip\n",
        results.len(),
        count("ok"),
        count("warn"),
        count("fail"),
        count("skip")
    ));
    out
}

/// `{"nodes": [{"name", "address", "ssh_address", "checks": [...]}], "result"}`.
pub fn json(results: &[NodeResult]) -> String {
    let all = || results.iter().flat_map(|n| n.checks.iter());
    let result = if all().any(|c| c.result == "fail") {
        "fail"
    } else if all().any(|c| c.result == "warn") {
        "warn"
    } else {
        "ok"
    };
    let doc = serde_json::json!({ "nodes": results, "result": result });
    serde_json::to_string_pretty(&doc).expect("plain data serializes")
}
