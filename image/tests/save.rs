//! `save` then `import` round-trips an image, on real drivers (vfs, overlay2, btrfs;
//! devmapper and zfs in the VM); needs root.

#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

#[path = "support/image_builder.rs"]
mod image_builder;

use graphdriver_conformance::tree_snapshot::{Compare, Snapshot};
use graphdriver_image::{Compression, ImageStore};
use image_builder::*;

fn image_layers() -> Vec<Layer> {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    vec![
        Layer::new(
            &[
                Entry::Dir("etc", 0o755),
                Entry::File("etc/os-release", 0o644, b"NAME=base\n".to_vec()),
                Entry::File("etc/shadow", 0o600, b"root:*:\n".to_vec()),
                Entry::Dir("usr", 0o755),
                Entry::Dir("usr/bin", 0o755),
                Entry::File("usr/bin/tool", 0o4755, b"#!/bin/sh\n".to_vec()),
                Entry::Symlink("usr/bin/alias", "tool"),
            ],
            Compression::Gzip,
        ),
        Layer::new(
            &[
                Entry::Dir("etc", 0o755),
                Entry::File("etc/os-release", 0o644, b"NAME=top\n".to_vec()),
                Entry::Whiteout("etc/shadow"),
                Entry::Dir("data", 0o700),
                Entry::File("data/blob", 0o644, data),
            ],
            Compression::Zstd,
        ),
    ]
}

fn top_snapshot(store: &ImageStore, name: &str) -> Snapshot {
    let driver = store.driver().as_ref();
    let top = store.get(name).unwrap().top_layer().unwrap().unwrap();
    let m = Mounted::new(driver, &top);
    Snapshot::capture(&m.path).unwrap()
}

#[test]
fn saved_image_imports_elsewhere_with_the_same_tree_and_saves_byte_identically() {
    for drv in &drivers() {
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let dir = scratch("save");
            let mut oci = OciLayout::new(&dir.path().join("layout"));
            oci.image(Some("app:1"), &image_layers());
            let layout = oci.finish();
            let (_d1, store) = open_store(drv, &dir.path().join("one")).unwrap();
            store.import(&layout).unwrap();

            let out = dir.path().join("app.tar");
            let report = store.save("app:1", &out, c).unwrap();
            assert_eq!(report.layers.len(), 2);
            let again = dir.path().join("again.tar");
            store.save("app:1", &again, c).unwrap();
            assert!(
                std::fs::read(&out).unwrap() == std::fs::read(&again).unwrap(),
                "{drv} {c:?}: two saves differ"
            );

            let (_d2, other) = open_store(drv, &dir.path().join("two")).unwrap();
            let recs = other.import(&out).unwrap();
            assert_eq!(recs.len(), 1);
            assert_eq!(recs[0].name.as_str(), "app:1");
            assert_eq!(recs[0].manifest.as_ref(), Some(&report.manifest));
            assert_eq!(recs[0].config, report.config);
            let how = Compare {
                dir_mtimes: false,
                root: false,
                mtimes: true,
            };
            let diff = top_snapshot(&other, "app:1").diff(&top_snapshot(&store, "app:1"), how);
            assert!(diff.is_empty(), "{drv} {c:?}:\n{}", diff.join("\n"));
            assert!(!dir.path().join("app.tar.tmp").exists());
        }
    }
}

#[test]
fn saving_a_missing_image_writes_nothing() {
    let dir = scratch("save-missing");
    let (_d, store) = open_store("vfs", dir.path()).unwrap();
    let out = dir.path().join("x.tar");
    assert!(matches!(
        store.save("nope", &out, Compression::Gzip),
        Err(graphdriver_image::ImageError::NotFound(_))
    ));
    assert!(!out.exists());
}

#[test]
fn layers_with_the_same_blob_are_written_once_and_the_tar_reads_back() {
    for drv in &drivers() {
        let dir = scratch("save-dup");
        // Layers 2 and 3 change nothing (as `ENV` or `WORKDIR` steps of a build leave
        // them): their diffs, so their blobs, are the same.
        let mut layers = image_layers();
        layers.push(Layer::new(&[], Compression::Gzip));
        layers.push(Layer::new(&[], Compression::Gzip));
        let mut oci = OciLayout::new(&dir.path().join("layout"));
        oci.image(Some("dup:1"), &layers);
        let (_d1, store) = open_store(drv, &dir.path().join("one")).unwrap();
        store.import(&oci.finish()).unwrap();
        let out = dir.path().join("dup.tar");
        let report = store.save("dup:1", &out, Compression::Zstd).unwrap();
        assert_eq!(report.layers.len(), 4);
        assert_eq!(report.layers[2], report.layers[3], "{drv}");
        // GNU tar reads it to the end, and lists the shared blob once.
        let list = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            list.status.success(),
            "{drv}: {}",
            String::from_utf8_lossy(&list.stderr)
        );
        let names = String::from_utf8(list.stdout).unwrap();
        let blob = report.layers[2].blob_path();
        assert_eq!(
            names.lines().filter(|l| *l == blob).count(),
            1,
            "{drv}:\n{names}"
        );
        assert_eq!(
            names
                .lines()
                .filter(|l| l.starts_with("blobs/sha256/") && l.len() > 14)
                .count(),
            5,
            "{drv}: 3 layer blobs, config and manifest:\n{names}"
        );
        let (_d2, other) = open_store(drv, &dir.path().join("two")).unwrap();
        let recs = other.import(&out).unwrap();
        assert_eq!(recs[0].layers.len(), 4);
        assert_eq!(recs[0].config, report.config);
        let diff = top_snapshot(&other, "dup:1").diff(
            &top_snapshot(&store, "dup:1"),
            Compare {
                dir_mtimes: false,
                root: false,
                mtimes: true,
            },
        );
        assert!(diff.is_empty(), "{drv}:\n{}", diff.join("\n"));
    }
}
