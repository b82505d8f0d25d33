//! The fuzz targets, one test each (see `sshbridge_fuzz`). CI runs each
//! for `SSHBRIDGE_FUZZ_SECONDS` (20 s by default); `scripts/fuzz
//! --minutes N` runs them longer.

#[path = "fuzz/files.rs"]
mod files;
#[path = "fuzz/konn_kit.rs"]
mod konn_kit;
#[path = "fuzz/konn_server.rs"]
mod konn_server;
#[path = "fuzz/wire.rs"]
mod wire;
