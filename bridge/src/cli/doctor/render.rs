//! The doctor's output: a plain aligned table per node, or JSON.

use super::NodeResult;

/// One table per node: the node line, then `CHECK  RESULT  MESSAGE`.
pub fn table(results: &[NodeResult]) -> String {
    let mut out = String::new();
    for n in results {
        out.push_str(&format!(
            "node {} (address {}, sshd {})\n",
            n.name, n.address, n.ssh_address
        ));
        let width = n
            .checks
            .iter()
            .map(|c| c.check.len())
            .chain(["CHECK".len()])
            .max()
            .unwrap_or(0);
        out.push_str(&format!("  {:width$}  RESULT  MESSAGE\n", "CHECK"));
        for c in &n.checks {
            out.push_str(&format!(
                "  {:width$}  {:6}  {}\n",
                c.check, c.result, c.message
            ));
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
