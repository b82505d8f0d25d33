//! The fuzz targets, one test each (see `sshbridge_fuzz`). CI runs each
//! for `SSHBRIDGE_FUZZ_SECONDS` (20 s by default); `scripts/fuzz
//! --minutes N` runs them longer.

#[path = "fuzz/files.rs"]
mod files;
#[path = "fuzz/wire.rs"]
mod wire;
