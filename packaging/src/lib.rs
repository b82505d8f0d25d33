//! The sshbridge OCI image, written directly as an OCI image layout in a
//! tar archive (`oci-archive`): no base image, no container engine.
//!
//! [`rootfs`] decides what the image's root holds (the binary, exactly the
//! shared libraries `ldd` names for it, `/etc/passwd` and `/etc/group` with
//! a non-root `sshbridge` user); [`oci`] writes that root as one
//! deterministic layer plus config, manifest and index. `scripts/image`
//! runs it on the release binary; the image test on the debug binary (same
//! structure). See docs/packaging.md.

pub mod oci;
pub mod rootfs;

pub use oci::{write_archive, ImageSpec, Written};
pub use rootfs::{plan, Entry, Source};

/// Why the image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading or writing a file failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done ("cannot read", ...).
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `ldd` could not list the binary's libraries.
    #[error("ldd {}: {why}; install libc-bin (ldd) or build a static binary", binary.display())]
    Ldd {
        /// The binary.
        binary: std::path::PathBuf,
        /// What went wrong.
        why: String,
    },
}

pub(crate) fn io_err<'a>(
    what: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}
