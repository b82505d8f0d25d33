//! sshbridge-sim (not published): simulated nodes for `sshbridge demo` (the
//! `demo` cargo feature of `sshbridge`), benchmarks and tests: a PKI, a TLS
//! kubelet stand-in, an apiserver-like client, a gRPC test client, and an
//! in-process SSH server. The SSH server is for demos and scale simulation
//! only; correctness tests use OpenSSH's sshd.
//!
//! This crate depends on russh directly (for its SSH server and keys), the
//! one exception to "only `sshbridge-ssh` sees russh": it is never linked
//! into the production binary.

pub mod agent_server;
pub mod apiserver;
pub mod grpc;
pub mod keys;
pub mod kubelet;
pub mod pki;
pub mod sshd;
