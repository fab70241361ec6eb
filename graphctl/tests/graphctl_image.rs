//! `graphctl image ...` end to end: import an OCI layout made here, list, history, remove.
//! Needs root (the vfs driver keeps owners).

#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

use std::path::Path;
use std::process::{Command, Output};

use graphdriver_image::Digest;
use serde_json::{json, Value};

fn graphctl(root: &Path, args: &[&str]) -> Output {
    graphctl_with(root, args, None)
}

/// `graphctl` with `GRAPHDRIVER_FAILPOINT` set to `failpoint`, if any.
fn graphctl_with(root: &Path, args: &[&str], failpoint: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_graphctl"));
    cmd.env_remove("GRAPHDRIVER_FAILPOINT");
    if let Some(f) = failpoint {
        cmd.env("GRAPHDRIVER_FAILPOINT", f);
    }
    cmd.arg("--root")
        .arg(root)
        .args(["--driver", "vfs", "image"])
        .args(args)
        .output()
        .unwrap()
}

fn blob(layout: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    std::fs::write(layout.join(d.blob_path()), bytes).unwrap();
    d
}

/// An OCI layout with one image, `tiny:1`, of one plain-tar layer made by GNU tar.
fn tiny_layout(dir: &Path) -> std::path::PathBuf {
    let files = dir.join("files");
    std::fs::create_dir_all(files.join("etc")).unwrap();
    std::fs::write(files.join("etc/hello"), b"hello\n").unwrap();
    let tar = dir.join("layer.tar");
    let st = Command::new("tar")
        .args(["--owner=0", "--group=0", "-C"])
        .arg(&files)
        .arg("-cf")
        .arg(&tar)
        .arg("etc")
        .status()
        .unwrap();
    assert!(st.success());
    let layer = std::fs::read(&tar).unwrap();
    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let layer_digest = blob(&layout, &layer);
    let config = serde_json::to_vec(&json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap();
    let config_digest = blob(&layout, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let manifest_digest = blob(&layout, &manifest);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "tiny:1"},
    }]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    layout
}

#[test]
fn image_import_ls_history_rm_round_trip() {
    let base = Path::new("/var/tmp/graphdriver-test");
    std::fs::create_dir_all(base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    let root = dir.path().join("root");
    let layout = tiny_layout(dir.path());

    let out = graphctl(&root, &["import", layout.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Loaded image: tiny:1"));
    assert!(root.join("images/images.redb").is_file());

    let out = graphctl(&root, &["ls", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "tiny:1");
    assert_eq!(v[0]["created"], "2024-01-02T03:04:05Z");
    let imported = v[0]["imported"].as_str().unwrap();
    assert!(
        imported.len() == 20 && imported.ends_with('Z') && imported.as_bytes()[10] == b'T',
        "{imported} is not RFC 3339"
    );

    let out = graphctl(&root, &["history", "tiny:1", "--json"]);
    assert!(out.status.success());
    let h: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h.as_array().unwrap().len(), 1);
    assert_eq!(h[0]["size"], 6);
    assert_eq!(h[0]["diff_id"], h[0]["chain_id"]);

    let saved = dir.path().join("saved.tar");
    let out = graphctl(
        &root,
        &[
            "save",
            "tiny:1",
            "-o",
            saved.to_str().unwrap(),
            "--compression",
            "zstd",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = dir.path().join("other");
    let out = graphctl(&other, &["import", saved.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Loaded image: tiny:1"));

    let out = graphctl(&root, &["rm", "tiny:1"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Deleted: "));
    let out = graphctl(&root, &["ls", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );

    // A missing image: exit 1 with the typed error on stderr.
    let out = graphctl(&root, &["rm", "tiny:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("image tiny:1 does not exist"));
}

/// The driver's layers under `root`, via `graphctl ls` (which does not open the image store).
fn driver_layers(root: &Path) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_graphctl"))
        .arg("--root")
        .arg(root)
        .args(["--driver", "vfs", "ls"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_crash_during_import_or_removal_is_swept_at_the_next_open() {
    let base = Path::new("/var/tmp/graphdriver-test");
    std::fs::create_dir_all(base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    let root = dir.path().join("root");
    let layout = tiny_layout(dir.path());
    let layout = layout.to_str().unwrap();

    // Killed after the layer is applied, before the image is recorded: the layer is there
    // but pending; the next open of the store removes it and records nothing.
    for point in ["image.import.after-layer", "apply.merge"] {
        let out = graphctl_with(&root, &["import", layout], Some(point));
        assert!(
            !out.status.success(),
            "{point}: the failpoint must stop the import"
        );
        assert_eq!(
            driver_layers(&root).len(),
            1,
            "{point}: the crash left the layer"
        );
        let out = graphctl(&root, &["ls", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
            json!([])
        );
        assert!(driver_layers(&root).is_empty(), "{point}: swept at open");
    }

    // Killed after the record is deleted, before its layers are removed: the layers are
    // pending and the next open removes them.
    assert!(graphctl(&root, &["import", layout]).status.success());
    assert_eq!(driver_layers(&root).len(), 1);
    let out = graphctl_with(&root, &["rm", "tiny:1"], Some("image.remove.after-record"));
    assert!(!out.status.success());
    assert_eq!(driver_layers(&root).len(), 1, "the crash left the layer");
    let out = graphctl(&root, &["ls", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
    assert!(driver_layers(&root).is_empty(), "swept at open");
}
