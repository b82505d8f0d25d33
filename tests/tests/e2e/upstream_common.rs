//! What the upstream interop tests (`upstream.rs`, `upstream_server.rs`)
//! and their shared scenarios (`upstream_scenarios.rs`) all use: the time
//! bounds, the skip when `ANP_BIN` is not set, the `observed:` lines.

use std::path::PathBuf;
use std::time::Duration;

use sshbridge_tests::upstream;

/// Bound for every connection of a finished scenario to be closed, on
/// every process. Generous: it covers an idle-close of the other direction
/// where the chosen behaviour waits for one.
pub const CLOSED: Duration = Duration::from_secs(45);
/// Bound for connections to close after one end went away entirely (a
/// vanished client, a target that closed): well below the 30 s
/// `stall_timeout`, so a close that waits for it fails.
pub const PROMPT: Duration = Duration::from_secs(10);

/// `$ANP_BIN`, or prints the skip line.
pub fn anp() -> Option<PathBuf> {
    let bin = upstream::anp_bin();
    if bin.is_none() {
        println!("skipped: ANP_BIN not set");
    }
    bin
}

/// Prints one observation (kept in the suite's output).
pub fn observed(what: &str) {
    println!("observed: {what}");
}
