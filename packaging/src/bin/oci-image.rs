//! `oci-image`: writes sshbridge's OCI image archive from a built binary
//! (run by `scripts/image`; see docs/packaging.md).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sshbridge_packaging::{plan, write_archive, ImageSpec, Source};

/// Writes an OCI archive holding BINARY and the libraries it needs.
#[derive(Debug, Parser)]
struct Args {
    /// The sshbridge binary to put in the image.
    #[arg(long, value_name = "FILE")]
    binary: PathBuf,
    /// Image name (the manifests default to sshbridge:VERSION).
    #[arg(long, default_value = "sshbridge")]
    name: String,
    /// Tag and org.opencontainers.image.version.
    #[arg(long)]
    version: String,
    /// org.opencontainers.image.revision (git commit).
    #[arg(long)]
    revision: String,
    /// mtime of every file and `created` (SOURCE_DATE_EPOCH).
    #[arg(long, default_value_t = 0)]
    epoch: u64,
    /// The archive to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let entries = plan(&args.binary)?;
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let spec = ImageSpec {
        name: args.name,
        version: args.version,
        revision: args.revision,
        epoch: args.epoch,
    };
    let written = write_archive(&spec, &entries, &args.out)?;
    for e in &entries {
        let from = match &e.source {
            Source::Host(p) => format!("  (from {})", p.display()),
            _ => String::new(),
        };
        println!(
            "  /{}{}{from}",
            e.path,
            if e.source == Source::Dir { "/" } else { "" }
        );
    }
    println!(
        "{}: {}:{} {} (root {} bytes, layer {} bytes gzip)",
        written.archive.display(),
        spec.name,
        spec.version,
        written.manifest_digest,
        written.root_bytes,
        written.layer_bytes
    );
    Ok(())
}
