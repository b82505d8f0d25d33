//! Simulated nodes for `sshbridge demo`, benchmarks and tests: a PKI, a TLS
//! kubelet stand-in, and an in-process SSH server. The SSH server is for
//! demos and scale simulation only; correctness tests use OpenSSH's sshd.

pub mod apiserver;
pub mod grpc;
pub mod keys;
pub mod kubelet;
pub mod pki;
pub mod sshd;
