//! Packaging: the OCI image is self-contained and holds nothing but what
//! is listed; the Debian package installs, upgrades its conffile politely
//! and removes cleanly. Both need root (chroot, dpkg).

#[path = "packaging/deb.rs"]
mod deb;
#[path = "packaging/image.rs"]
mod image;
#[path = "packaging/support.rs"]
mod support;
