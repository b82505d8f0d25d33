//! End-to-end tests: one binary, real sshd nodes.
