//! Every fixture: valid ones load clean, invalid ones report what their
//! `# expect:` lines say, at the position they say.

use super::kit::{expectations, fixtures, matches, Kit};

#[test]
fn every_valid_fixture_loads() {
    let all = fixtures("valid");
    assert!(all.len() >= 3, "valid fixtures missing");
    for (name, text) in all {
        let kit = Kit::new();
        if let Err(e) = kit.load(&name, &text) {
            panic!("{name} should be valid, got:\n{e}");
        }
    }
}

#[test]
fn every_invalid_fixture_reports_its_expected_diagnostics() {
    let all = fixtures("invalid");
    assert!(all.len() >= 20, "invalid fixtures missing");
    let mut failures = Vec::new();
    for (name, text) in all {
        let expected = expectations(&text);
        assert!(!expected.is_empty(), "{name} has no `# expect:` line");
        let kit = Kit::new();
        let err = match kit.load(&name, &text) {
            Ok(_) => {
                failures.push(format!("{name} should be invalid but loaded"));
                continue;
            }
            Err(e) => e,
        };
        let shown = err.to_string();
        let diags = err.diagnostics();
        let dir = kit.dir.path().display().to_string();
        for (line, col, what) in &expected {
            let what = what.replace("@DIR@", &dir);
            if !diags.iter().any(|d| matches(d, *line, *col, &what)) {
                failures.push(format!(
                    "{name}: expected {line}:{col}: {what:?}, got:\n{shown}"
                ));
            }
            let prefix = format!("{name}:{line}:{col}: ");
            if !shown.lines().any(|l| l.contains(&prefix)) {
                failures.push(format!("{name}: display lacks {prefix:?}:\n{shown}"));
            }
        }
        // Nothing unannounced: each diagnostic is one the fixture expects.
        if diags.len() != expected.len() {
            failures.push(format!(
                "{name}: {} diagnostics, {} expected:\n{shown}",
                diags.len(),
                expected.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
