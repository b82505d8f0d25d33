//! Config crate tests: fixtures of valid and invalid files, the embedded
//! example, and resolved defaults.

mod config {
    pub mod api;
    pub mod example;
    pub mod fixtures;
    pub mod kit;
}
