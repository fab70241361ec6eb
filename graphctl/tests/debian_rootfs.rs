//! A real Debian root filesystem (debootstrap --variant=minbase bookworm, tarred by GNU tar)
//! through the vfs driver: apply, mounted view, export, and a container layer's changes.
//! Runs as root; builds the rootfs once with scripts/debian-rootfs.sh (cached).

#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use graphdriver_api::{CreateOpts, GraphDriver, LayerId, MountOpts};
use graphdriver_conformance::fixture::{run, ScratchFs};
use graphdriver_conformance::tree_snapshot::{Compare, Snapshot};

fn rootfs_tar() -> PathBuf {
    if let Some(p) = std::env::var_os("GRAPHDRIVER_ROOTFS_TAR") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/debian-rootfs.sh");
    let out = run(&mut Command::new(&script))
        .expect("scripts/debian-rootfs.sh makes the Debian rootfs tar");
    PathBuf::from(out.trim())
}

fn gnu_tar_extract(tar: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(tar)
        .arg("-C")
        .arg(dir))
    .unwrap();
}

fn same(a: &Snapshot, b: &Snapshot, what: &str) {
    let d = a.diff(b, Compare::default());
    assert!(
        d.is_empty(),
        "{what}: {} differences:\n{}",
        d.len(),
        d.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn debian_rootfs_applies_exports_and_diffs_like_gnu_tar() {
    let tar = rootfs_tar();
    let fs = ScratchFs::new(Path::new("/var/tmp/graphdriver-test"), "ext4", 8 << 30, "").unwrap();
    let expected_dir = fs.path().join("gnu");
    gnu_tar_extract(&tar, &expected_dir);
    let expected = Snapshot::capture(&expected_dir).unwrap();
    assert!(
        expected.nodes.len() > 5000,
        "the rootfs has only {} entries",
        expected.nodes.len()
    );

    let root = fs.path().join("root");
    let d = graphdriver_vfs::open(&root, &Default::default()).unwrap();
    let image = LayerId::new("bookworm").unwrap();
    d.create(&image, None, &CreateOpts::default()).unwrap();
    let applied = d
        .apply_diff(&image, None, &mut std::fs::File::open(&tar).unwrap())
        .unwrap();
    assert_eq!(
        applied,
        d.diff_size(&image, None).unwrap(),
        "applied size and diff_size differ"
    );

    // the mounted view equals GNU tar's extraction
    let view = Snapshot::capture(&d.get(&image, &MountOpts::default()).unwrap()).unwrap();
    d.put(&image).unwrap();
    same(
        &expected,
        &view,
        "mounted view against GNU tar's extraction",
    );

    // the export extracts with GNU tar to the same tree, and is deterministic
    let export = fs.path().join("export.tar");
    let mut bytes = Vec::new();
    d.diff(&image, None)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    std::fs::write(&export, &bytes).unwrap();
    let mut again = Vec::new();
    d.diff(&image, None)
        .unwrap()
        .read_to_end(&mut again)
        .unwrap();
    assert!(bytes == again, "two exports of one layer differ");
    let reextracted = fs.path().join("reextracted");
    gnu_tar_extract(&export, &reextracted);
    same(
        &view,
        &Snapshot::capture(&reextracted).unwrap(),
        "GNU tar extraction of our export",
    );

    // a container layer that deletes /usr/bin/cat
    let ctr = LayerId::new("ctr").unwrap();
    d.create(
        &ctr,
        Some(&image),
        &CreateOpts {
            read_write: true,
            ..CreateOpts::default()
        },
    )
    .unwrap();
    let p = d.get(&ctr, &MountOpts::default()).unwrap();
    std::fs::remove_file(p.join("usr/bin/cat")).unwrap();
    d.put(&ctr).unwrap();
    drop(d);
    let out = Command::new(env!("CARGO_BIN_EXE_graphctl"))
        .args(["--driver", "vfs", "--root"])
        .arg(&root)
        .args(["changes", "ctr"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "graphctl changes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "C /usr\nC /usr/bin\nD /usr/bin/cat\n"
    );
    let d = graphdriver_vfs::open(&root, &Default::default()).unwrap();
    d.cleanup().unwrap();
}
