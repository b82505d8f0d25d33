//! `sshbridge migrate status` for people: the rollout line, what it waits
//! for, and one row per node (comfy-table, like `sshbridge report`).

use std::fmt::Write as _;

use comfy_table::{Cell, Color};
use sshbridge_migrate::{NodePhase, Status};
use sshbridge_report::render::{table, table_text};

/// The status document as text; `colour` paints the phase column.
pub(super) fn status_text(s: &Status, colour: bool) -> String {
    let mut out = format!("Rollout: {}", s.phase.as_str());
    if let Some(b) = s.current_batch {
        let _ = write!(out, ", batch {b} of {}", s.batches.len());
    }
    if let Some(e) = &s.elapsed {
        let _ = write!(out, ", elapsed {e}");
    }
    out.push('\n');
    if let Some(r) = &s.reason {
        let _ = writeln!(out, "Reason: {r}");
    }
    for w in &s.waiting_for {
        let _ = writeln!(out, "Waiting for {w}");
    }
    let mut t = table(&["NODE", "PHASE", "ROUTE", "IN PHASE", "NOTE"], colour);
    for n in &s.nodes {
        let note = n
            .rollback_reason
            .as_deref()
            .filter(|_| n.phase == NodePhase::RolledBack)
            .or(n.waiting_for.as_deref())
            .unwrap_or("");
        let mut phase = Cell::new(n.phase.as_str());
        if colour {
            phase = phase.fg(phase_colour(n.phase));
        }
        t.add_row(vec![
            Cell::new(&n.name),
            phase,
            Cell::new(n.route.as_str()),
            Cell::new(&n.in_phase),
            Cell::new(note),
        ]);
    }
    out.push_str(&table_text(&t));
    if let Some(e) = &s.last_error {
        let _ = writeln!(out, "Last error: {e}");
    }
    out
}

fn phase_colour(p: NodePhase) -> Color {
    match p {
        NodePhase::Done => Color::Green,
        NodePhase::RolledBack => Color::Red,
        NodePhase::Ssh => Color::Reset,
        NodePhase::Shadow | NodePhase::Cutover | NodePhase::Soak => Color::Yellow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        serde_json::from_value(serde_json::json!({
            "phase": "paused",
            "reason": "node-b rolled back",
            "abort_on_failure": false,
            "current_batch": 2,
            "batches": [["node-a"], ["node-b"]],
            "started_at": "2026-12-01T03:00:00Z",
            "elapsed": "4m",
            "waiting_for": [],
            "nodes": [
                {"name": "node-a", "phase": "done", "route": "konnectivity",
                 "since": "2026-12-01T03:01:00Z", "in_phase": "3m", "waiting_for": null,
                 "comparison": null, "rollback_reason": null, "history": []},
                {"name": "node-b", "phase": "rolled_back", "route": "ssh",
                 "since": "2026-12-01T03:03:00Z", "in_phase": "1m", "waiting_for": null,
                 "comparison": null, "rollback_reason": "soak: 3 of 10 dials failed",
                 "history": []}
            ],
            "rolled_back": ["node-b"],
            "last_error": null,
            "finalized_at": null
        }))
        .expect("a valid status document")
    }

    #[test]
    fn one_row_per_node_with_the_rollback_reason_as_note() {
        let text = status_text(&status(), false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Rollout: paused, batch 2 of 2, elapsed 4m");
        assert_eq!(lines[1], "Reason: node-b rolled back");
        assert!(lines[2].starts_with("NODE    PHASE"), "{text}");
        assert!(lines[3].starts_with("node-a  done"), "{text}");
        assert!(
            lines[4].starts_with("node-b  rolled_back")
                && lines[4].ends_with("soak: 3 of 10 dials failed"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "no colour was asked for: {text:?}");
    }

    #[test]
    fn colour_paints_the_phase_only_when_asked() {
        let text = status_text(&status(), true);
        assert!(text.contains("\x1b["), "{text:?}");
    }
}
