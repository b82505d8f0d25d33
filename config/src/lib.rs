//! sshbridge's configuration: the TOML schema of `../shared/DESIGN.md`, its
//! defaults, and validation into a fully resolved [`Config`].
//!
//! What it does: parse one file, reject unknown keys, resolve defaults, parse
//! durations, sizes and CIDRs, check cross-field rules (unique node names and
//! addresses, disjoint pod CIDRs) and the files the config points at
//! (present, private keys not readable by group or others). Every problem is
//! reported with `file:line:col` and a hint.
//!
//! What it does not: open sockets, read key material, or watch the file.
//! The daemon calls [`load`] again on SIGHUP.

#![warn(missing_docs)]

mod agent_auth;
mod diag;
mod host_port;
mod model;
mod raw;
mod units;
mod validate;

use std::path::Path;

pub use agent_auth::{AgentAuth, ServiceAccount, TokenReview};
pub use diag::{ConfigError, Diagnostic};
pub use host_port::HostPortError;
pub use model::*;
pub use units::MAX_SOAK;

/// An annotated example config: every key, what it does and its default.
/// `sshbridge config example` prints it.
pub const EXAMPLE: &str = include_str!("../example.toml");

/// Reads `path` and validates it; see [`parse`].
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates `text`, the contents of the file `source`.
///
/// Relative paths in the config are taken from `source`'s directory, and
/// every diagnostic names `source`. Syntax errors and unknown keys stop at
/// the first one (the TOML decoder cannot go on past them); all other
/// problems are collected and reported together.
pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let mut d = diag::Diags::new(text, source);
            let span = e.span().unwrap_or(0..0);
            let message = e
                .message()
                .trim()
                .replace('\n', "; ")
                .replace("expected i64", "expected an integer")
                .replace("expected f64", "expected a number");
            if message.starts_with("unknown field") {
                d.hint(
                    &span,
                    message,
                    "remove it or fix its spelling; `sshbridge config example` lists every key",
                );
            } else {
                d.error(&span, message);
            }
            return Err(d.into_error());
        }
    };
    validate::validate(&raw, text, source)
}
