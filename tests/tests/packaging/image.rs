//! The OCI image (built here from the debug binary; `scripts/image` uses
//! the release binary, same layout): every blob matches its digest, the
//! root holds exactly the binary, the libraries `ldd` names and
//! passwd/group, and the binary runs inside it with `chroot`, as root and
//! as the image's non-root user.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sshbridge_packaging::{plan, write_archive, ImageSpec};
use sshbridge_tests::bridge::bridge_bin;

use super::support::{example_files, run, run_ok};

#[test]
fn image_is_self_contained_and_holds_only_what_is_listed() {
    let bin = bridge_bin().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("sshbridge-0.1.0.oci.tar");
    let spec = ImageSpec {
        name: "sshbridge".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        revision: "0123456789abcdef".into(),
        epoch: 1_700_000_000,
    };
    write_archive(&spec, &plan(&bin).unwrap(), &archive).unwrap();

    // The layout: index -> manifest -> config + one layer, digests checked.
    let layout = dir.path().join("layout");
    tar::Archive::new(File::open(&archive).unwrap())
        .unpack(&layout)
        .unwrap();
    let oci_layout = json(&layout.join("oci-layout"));
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index = json(&layout.join("index.json"));
    let desc = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        desc["annotations"]["io.containerd.image.name"],
        format!("docker.io/library/{}", sshbridge::manifests::DEFAULT_IMAGE),
        "the image must carry the name the manifests use by default"
    );
    let manifest_path = blob(&layout, desc);
    let manifest = json(&manifest_path);
    let config = json(&blob(&layout, &manifest["config"]));
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], spec.version);
    assert_eq!(labels["org.opencontainers.image.revision"], spec.revision);
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    let layer = blob(&layout, &manifest["layers"][0]);
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(File::open(&layer).unwrap())
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{:x}", Sha256::digest(&tar_bytes)),
        "diff_id is the digest of the uncompressed layer"
    );

    // The root holds exactly: the binary, passwd, group, what ldd lists.
    let root = dir.path().join("root");
    let mut layer_tar = tar::Archive::new(&tar_bytes[..]);
    layer_tar.set_preserve_permissions(true);
    layer_tar.unpack(&root).unwrap();
    let mut expected: BTreeSet<String> = ["usr/bin/sshbridge", "etc/passwd", "etc/group"]
        .map(String::from)
        .into();
    let ldd = run_ok("ldd", &[bin.to_str().unwrap()]);
    for word in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        expected.insert(word.trim_start_matches('/').to_string());
    }
    for path in expected.clone() {
        let mut p = Path::new(&path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            expected.insert(d.display().to_string());
            p = d.parent();
        }
    }
    let found = walk(&root);
    assert_eq!(
        found, expected,
        "the image root holds exactly what is listed"
    );
    assert!(
        expected.iter().any(|p| p.contains("libc.so")),
        "{expected:?}"
    );
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("sshbridge:x:65532:65532:"), "{passwd}");

    // It runs there, with nothing from the host.
    let root_s = root.to_str().unwrap();
    let version = run_ok("chroot", &[root_s, "/usr/bin/sshbridge", "--version"]);
    assert_eq!(version.trim(), format!("sshbridge {}", spec.version));
    let help = run_ok(
        "chroot",
        &[
            "--userspec=65532:65532",
            root_s,
            "/usr/bin/sshbridge",
            "agent",
            "--help",
        ],
    );
    assert!(help.contains("--server"), "{help}");
    // The annotated example config checks clean inside the image.
    let etc = root.join("etc/sshbridge");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("sshbridge.toml"), sshbridge_config::EXAMPLE).unwrap();
    example_files(&root);
    let check = run_ok(
        "chroot",
        &[
            root_s,
            "/usr/bin/sshbridge",
            "config",
            "check",
            "--config",
            "/etc/sshbridge/sshbridge.toml",
        ],
    );
    assert!(check.contains(": ok ("), "{check}");
    // And a broken config is still refused there (the check really ran).
    std::fs::remove_file(etc.join("id_ed25519")).unwrap();
    let bad = run(
        "chroot",
        &[
            root_s,
            "/usr/bin/sshbridge",
            "config",
            "check",
            "--config",
            "/etc/sshbridge/sshbridge.toml",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ssh.identity"));
}

/// The blob a descriptor names, checked against its digest and size.
fn blob(layout: &Path, desc: &serde_json::Value) -> PathBuf {
    let digest = desc["digest"].as_str().expect("descriptor has a digest");
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = layout.join("blobs/sha256").join(hex);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        format!("{:x}", Sha256::digest(&data)),
        hex,
        "{}",
        path.display()
    );
    assert_eq!(Some(data.len() as u64), desc["size"].as_u64(), "{digest}");
    path
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every path under `root`, relative, directories included.
fn walk(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            out.insert(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                todo.push(path);
            }
        }
    }
    out
}
