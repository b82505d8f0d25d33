//! sshbridge's configuration: the TOML schema of `../shared/DESIGN.md`, its
//! defaults, and validation into a fully resolved [`Config`].
//!
//! What it does: parse one file, reject unknown keys, resolve defaults, parse
//! durations, sizes and CIDRs, check cross-field rules (unique node names and
//! addresses) and the files the config points at (present, private keys not
//! readable by group or others). Every problem is reported with
//! `file:line:col` and a hint.
//!
//! What it does not: open sockets, read key material, or watch the file.
//! The daemon calls [`load`] again on SIGHUP.

mod model;

pub use model::*;
