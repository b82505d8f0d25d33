//! Why a known_hosts file is unusable ([`KnownHostsError`]) and why a
//! node's host key was refused ([`HostKeyError`]).

use std::path::PathBuf;

/// A known_hosts file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    /// The file could not be read.
    #[error("cannot read known_hosts {path}: {source}; check [ssh].known_hosts")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{path}:{line}: {reason}; fix or remove that line")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Why a node's host key was refused. Each variant is one metrics reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostKeyError {
    /// No entry of the file names this host.
    #[error("host key {fingerprint} of node {node} ({addr}) is unknown: {file} has no entry for {candidates}; verify the fingerprint out of band, add the key (ssh-keyscan) and reload")]
    Unknown {
        /// Node name.
        node: String,
        /// The sshd address.
        addr: String,
        /// The known_hosts file.
        file: PathBuf,
        /// The host names that were looked up.
        candidates: String,
        /// SHA256 fingerprint of the presented key.
        fingerprint: String,
    },
    /// The host is known with other keys.
    #[error("host key {fingerprint} of node {node} ({addr}) does not match {file} line(s) {lines}; if the node was reinstalled replace those lines with its new key, otherwise suspect an attack")]
    Mismatch {
        /// Node name.
        node: String,
        /// The sshd address.
        addr: String,
        /// The known_hosts file.
        file: PathBuf,
        /// Line numbers of this host's entries, comma separated.
        lines: String,
        /// SHA256 fingerprint of the presented key.
        fingerprint: String,
    },
    /// The key (or the CA that signed it) is listed as `@revoked`.
    #[error("host key {fingerprint} of node {node} ({addr}) is revoked by {file} line {line}; rotate the node's host key")]
    Revoked {
        /// Node name.
        node: String,
        /// The sshd address.
        addr: String,
        /// The known_hosts file.
        file: PathBuf,
        /// The `@revoked` line.
        line: usize,
        /// SHA256 fingerprint of the revoked key.
        fingerprint: String,
    },
    /// A host certificate from a trusted CA failed validation.
    #[error("host certificate of node {node} ({addr}), CA from {file} line {line}, is invalid: {reason}; re-issue it with ssh-keygen -s CA -h -n NAME")]
    Certificate {
        /// Node name.
        node: String,
        /// The sshd address.
        addr: String,
        /// The known_hosts file.
        file: PathBuf,
        /// The `@cert-authority` line that matched the signer.
        line: usize,
        /// What is wrong with the certificate.
        reason: String,
    },
}
