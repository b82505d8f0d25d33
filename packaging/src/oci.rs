//! Writes an image root as an OCI image layout inside one tar archive
//! (`oci-layout`, `index.json`, `blobs/sha256/...`): one gzip layer, the
//! image config and the manifest. Byte for byte reproducible for the same
//! inputs (sorted entries, owner root, one fixed mtime).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::rootfs::{Entry, Source, BINARY_PATH, USER_ID};
use crate::{io_err, ImageError};

/// `io.containerd.image.name` and `org.opencontainers.image.ref.name`
/// derive from these; `sshbridge:VERSION` is what the manifests name.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Repository name, e.g. `sshbridge`.
    pub name: String,
    /// Tag and `org.opencontainers.image.version`.
    pub version: String,
    /// Git commit, `org.opencontainers.image.revision`.
    pub revision: String,
    /// Seconds since the epoch for every mtime and `created`
    /// (`SOURCE_DATE_EPOCH`, the commit time).
    pub epoch: u64,
}

/// What [`write_archive`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The archive.
    pub archive: PathBuf,
    /// `sha256:...` of the manifest (the image's digest).
    pub manifest_digest: String,
    /// Compressed size of the layer in bytes.
    pub layer_bytes: u64,
    /// Uncompressed size of the root's files in bytes.
    pub root_bytes: u64,
}

/// OCI's name for this machine's architecture.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes `entries` as the image `spec` into the archive `out` (a temp
/// file next to it holds the layer while it is hashed).
pub fn write_archive(
    spec: &ImageSpec,
    entries: &[Entry],
    out: &Path,
) -> Result<Written, ImageError> {
    let layer_tmp = out.with_extension("layer.tmp");
    let (diff_id, layer_digest, layer_bytes, root_bytes) = write_layer(spec, entries, &layer_tmp)?;
    let created =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(spec.epoch)).to_string();
    let labels = json!({
        "org.opencontainers.image.title": spec.name,
        "org.opencontainers.image.description":
            "sshbridge: kube-apiserver egress to the nodes over SSH tunnels and Konnectivity",
        "org.opencontainers.image.version": spec.version,
        "org.opencontainers.image.revision": spec.revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.licenses": "Apache-2.0",
    });
    let config = json!({
        "created": created,
        "architecture": oci_arch(),
        "os": "linux",
        "config": {
            "User": format!("{USER_ID}:{USER_ID}"),
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "Entrypoint": [format!("/{BINARY_PATH}")],
            "Cmd": ["--help"],
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": created, "created_by": "scripts/image (sshbridge-packaging)" }],
    });
    let config = to_bytes(&config);
    let manifest = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer_bytes,
        }],
        "annotations": labels,
    }));
    let manifest_digest = sha256(&manifest);
    let index = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": { "architecture": oci_arch(), "os": "linux" },
            "annotations": {
                // The tag (OCI's convention); podman and containerd take the
                // full name, which is what a Pod's `image: NAME:VERSION` resolves to.
                "org.opencontainers.image.ref.name": spec.version,
                "io.containerd.image.name": format!("docker.io/library/{}:{}", spec.name, spec.version),
            },
        }],
    }));
    let file = File::create(out).map_err(io_err("cannot create", out))?;
    let mut ar = tar::Builder::new(BufWriter::new(file));
    let add = |ar: &mut tar::Builder<_>, path: &str, data: &[u8]| -> io::Result<()> {
        let mut h = header(
            spec.epoch,
            tar::EntryType::Regular,
            0o644,
            data.len() as u64,
        );
        ar.append_data(&mut h, path, data)
    };
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    (|| -> io::Result<()> {
        add(&mut ar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add(&mut ar, "index.json", &index)?;
        for dir in ["blobs/", "blobs/sha256/"] {
            let mut h = header(spec.epoch, tar::EntryType::Directory, 0o755, 0);
            ar.append_data(&mut h, dir, io::empty())?;
        }
        add(&mut ar, &blob(&manifest_digest), &manifest)?;
        add(&mut ar, &blob(&sha256(&config)), &config)?;
        let mut h = header(spec.epoch, tar::EntryType::Regular, 0o644, layer_bytes);
        ar.append_data(&mut h, blob(&layer_digest), File::open(&layer_tmp)?)?;
        ar.into_inner()?.flush()
    })()
    .map_err(io_err("cannot write", out))?;
    let _ = std::fs::remove_file(&layer_tmp);
    Ok(Written {
        archive: out.to_path_buf(),
        manifest_digest,
        layer_bytes,
        root_bytes,
    })
}

/// Writes the layer (gzip'd tar of `entries`) to `path`; returns its
/// diff_id (digest of the tar), digest and size (of the gzip) and the sum
/// of the file sizes.
fn write_layer(
    spec: &ImageSpec,
    entries: &[Entry],
    path: &Path,
) -> Result<(String, String, u64, u64), ImageError> {
    let file = File::create(path).map_err(io_err("cannot create", path))?;
    let gz = GzEncoder::new(Hashing::new(BufWriter::new(file)), Compression::default());
    let mut tar = tar::Builder::new(Hashing::new(gz));
    let mut root_bytes = 0;
    for e in entries {
        match &e.source {
            Source::Dir => {
                let mut h = header(spec.epoch, tar::EntryType::Directory, e.mode, 0);
                tar.append_data(&mut h, format!("{}/", e.path), io::empty())
                    .map_err(io_err("cannot write", path))?;
            }
            Source::Text(text) => {
                let len = text.len() as u64;
                let mut h = header(spec.epoch, tar::EntryType::Regular, e.mode, len);
                tar.append_data(&mut h, &e.path, text.as_bytes())
                    .map_err(io_err("cannot write", path))?;
                root_bytes += len;
            }
            Source::Host(from) => {
                let f = File::open(from).map_err(io_err("cannot read", from))?;
                let len = f.metadata().map_err(io_err("cannot stat", from))?.len();
                let mut h = header(spec.epoch, tar::EntryType::Regular, e.mode, len);
                tar.append_data(&mut h, &e.path, f)
                    .map_err(io_err("cannot copy into the image", from))?;
                root_bytes += len;
            }
        }
    }
    let tar_hash = tar.into_inner().map_err(io_err("cannot write", path))?;
    let diff_id = tar_hash.digest();
    let gz_hash = tar_hash
        .inner
        .finish()
        .map_err(io_err("cannot write", path))?;
    let (digest, size) = (gz_hash.digest(), gz_hash.len);
    gz_hash
        .inner
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(io_err("cannot write", path))?;
    Ok((diff_id, digest, size, root_bytes))
}

/// A tar header owned by root with a fixed mtime.
fn header(epoch: u64, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(epoch);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn to_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON values always serialize")
}

/// `sha256:HEX` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }

    fn digest(&self) -> String {
        format!("sha256:{:x}", self.hash.clone().finalize())
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
