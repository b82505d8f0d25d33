//! The Debian package (placeholder until scripts/deb lands).
