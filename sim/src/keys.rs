//! Key material for simulated nodes: fresh Ed25519 keys, and the three text
//! forms OpenSSH tools read (private key file, `known_hosts` line,
//! `authorized_keys` line).
//!
//! These helpers exist so `sshbridge demo`, benchmarks and tests can stand up
//! nodes without `ssh-keygen`; production keys come from the operator.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::RngCore;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
pub use russh::keys::{PrivateKey, PublicKey};

/// Generates a new Ed25519 key pair from the operating system's CSPRNG.
pub fn generate_ed25519() -> PrivateKey {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    seed.fill(0);
    key
}

/// Writes `key` to `path` in OpenSSH's private key format, unencrypted, with
/// file mode 0600 (OpenSSH refuses identity files that others can read).
///
/// An existing file is replaced and its mode tightened to 0600.
pub fn write_private_key(path: impl AsRef<Path>, key: &PrivateKey) -> io::Result<()> {
    let path = path.as_ref();
    let text = key.to_openssh(LineEnding::LF).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot encode private key for {}: {e}", path.display()),
        )
    })?;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` only applies when the file is created; an older file keeps its
    // mode unless we tighten it explicitly.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The `algorithm base64` part of an OpenSSH public key line, without the
/// comment.
fn key_text(key: &PublicKey) -> String {
    let algorithm = key.algorithm();
    let blob = key
        .to_bytes()
        .expect("an in-memory public key always encodes to its wire form");
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(blob);
    format!("{} {encoded}", algorithm.as_str())
}

/// A plain (unhashed) `known_hosts` entry for `host` on `port`, without a
/// trailing newline. Port 22 uses the bare host; any other port uses
/// OpenSSH's `[host]:port` form, which is what `ssh -p PORT` looks up.
pub fn known_hosts_line(host: &str, port: u16, key: &PublicKey) -> String {
    let pattern = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    format!("{pattern} {}", key_text(key))
}

/// An `authorized_keys` entry for `key` (no options, no comment), without a
/// trailing newline.
pub fn authorized_keys_line(key: &PublicKey) -> String {
    key_text(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_differ_and_are_ed25519() {
        let a = generate_ed25519();
        let b = generate_ed25519();
        assert_eq!(a.algorithm(), russh::keys::Algorithm::Ed25519);
        assert_ne!(a.public_key(), b.public_key());
    }

    #[test]
    fn private_key_file_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_ed25519");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let key = generate_ed25519();
        write_private_key(&path, &key).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = russh::keys::load_secret_key(&path, None).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
    }

    #[test]
    fn known_hosts_line_uses_bracket_form_off_port_22() {
        let key = generate_ed25519();
        let pk = key.public_key();
        let line = known_hosts_line("127.0.0.1", 2222, pk);
        assert!(line.starts_with("[127.0.0.1]:2222 ssh-ed25519 "), "{line}");
        let line22 = known_hosts_line("node-a", 22, pk);
        assert!(line22.starts_with("node-a ssh-ed25519 "), "{line22}");
        // The key part parses back to the same key.
        let parsed = PublicKey::from_openssh(&authorized_keys_line(pk)).unwrap();
        assert_eq!(parsed.key_data(), pk.key_data());
        assert!(!line.ends_with('\n'));
    }
}
