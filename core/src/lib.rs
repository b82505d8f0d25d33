//! sshbridge-core: the small types every part of sshbridge shares.
//!
//! What is here: the dialed byte stream and its classified errors, and
//! the [`Path`] seam every path implements ([`path`], [`PathKind`]), the state of a path ([`PathState`]), `host:port`
//! ([`HostPort`], re-exported from `sshbridge-config` with its one
//! parser), reconnect delays ([`backoff`]), giving freed memory back
//! ([`memory`]), TLS material from PEM files ([`tls`]) and the
//! bound on concurrent TLS handshakes ([`handshake`]), the Prometheus
//! registry ([`metrics`]), a poison-tolerant mutex [`lock`] and
//! prompt ACKs on latency-sensitive sockets ([`quickack`]).
//!
//! What is not: anything that talks SSH (`sshbridge-ssh`) or Konnectivity
//! (`sshbridge-konnectivity`), the daemon (`sshbridge`). This crate stays
//! small and depends on no protocol library.

#![warn(missing_docs)]

pub mod backoff;
pub mod copy;
pub mod handshake;
pub mod memory;
pub mod metrics;
pub mod path;
pub mod quickack;
mod sync;
pub mod tasks;
pub mod tls;

pub use path::{BoxStream, DialError, Path, PathState, PathStats, Stream};
pub use sshbridge_config::{HostPort, HostPortError, PathKind};
pub use sync::lock;
