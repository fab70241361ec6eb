//! Import, verification, sharing, removal and crash recovery on real drivers (vfs, overlay2,
//! btrfs; devmapper and zfs in the VM).
//! Needs root (as the drivers do); scratch roots are under /var/tmp.

#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

#[path = "support/image_builder.rs"]
mod image_builder;

use std::path::Path;

use graphdriver_conformance::tree_snapshot::{Compare, Snapshot};
use graphdriver_image::{
    layer_id, Compression, Digest, ImageError, ImageStore, ImportLimits, DB_FILE,
};
use image_builder::*;
use serde_json::json;

fn base_entries() -> Vec<Entry> {
    vec![
        Entry::Dir("etc", 0o755),
        Entry::File("etc/os-release", 0o644, b"NAME=base\n".to_vec()),
        Entry::File("etc/remove-me", 0o600, b"going\n".to_vec()),
        Entry::Dir("usr", 0o755),
        Entry::Dir("usr/bin", 0o755),
        Entry::File("usr/bin/tool", 0o755, b"#!/bin/sh\necho tool\n".to_vec()),
        Entry::Symlink("usr/bin/alias", "tool"),
        Entry::Dir("tmp", 0o1777),
    ]
}

fn top_a_entries() -> Vec<Entry> {
    vec![
        Entry::Dir("etc", 0o755),
        Entry::File("etc/os-release", 0o644, b"NAME=a\n".to_vec()),
        Entry::File("etc/app-a.conf", 0o640, b"a=1\n".to_vec()),
        Entry::Whiteout("etc/remove-me"),
    ]
}

fn top_b_entries() -> Vec<Entry> {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    vec![
        Entry::Dir("opt", 0o755),
        Entry::Dir("opt/b", 0o750),
        Entry::File("opt/b/data", 0o644, data),
    ]
}

/// Regular-file bytes of a layer's entries (what `apply_diff` reports).
fn file_bytes(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .map(|e| match e {
            Entry::File(_, _, d) => d.len() as u64,
            _ => 0,
        })
        .sum()
}

/// Image `a:latest` (base + top A, gzip) and `b:latest` (the same base + top B, zstd).
struct TwoImages {
    base_gz: Layer,
    top_a: Layer,
    base_zst: Layer,
    top_b: Layer,
}

impl TwoImages {
    fn new() -> TwoImages {
        TwoImages {
            base_gz: Layer::new(&base_entries(), Compression::Gzip),
            top_a: Layer::new(&top_a_entries(), Compression::Gzip),
            base_zst: Layer::new(&base_entries(), Compression::Zstd),
            top_b: Layer::new(&top_b_entries(), Compression::Zstd),
        }
    }

    fn write(&self, dir: &Path) -> std::path::PathBuf {
        let mut oci = OciLayout::new(dir);
        oci.image(
            Some("a:latest"),
            &[self.base_gz.clone(), self.top_a.clone()],
        );
        oci.image(
            Some("b:latest"),
            &[self.base_zst.clone(), self.top_b.clone()],
        );
        oci.finish()
    }
}

fn compare_top(
    driver: &dyn graphdriver_api::GraphDriver,
    store: &ImageStore,
    name: &str,
    layers: &[&Layer],
    reference: &Path,
) {
    reference_extract(reference, layers).unwrap();
    let want = Snapshot::capture(reference).unwrap();
    let top = store.get(name).unwrap().top_layer().unwrap().unwrap();
    let m = Mounted::new(driver, &top);
    let got = Snapshot::capture(&m.path).unwrap();
    let how = Compare {
        dir_mtimes: false,
        root: false,
        mtimes: true,
    };
    let diff = got.diff(&want, how);
    assert!(
        diff.is_empty(),
        "{} {name}: mounted top layer differs from the reference extraction:\n{}\nmounted:\n{}",
        driver.name(),
        diff.join("\n"),
        got.render(50)
    );
}

#[test]
fn two_images_sharing_a_base_apply_it_once_and_mount_as_their_tars_extract() {
    for drv in &drivers() {
        let dir = scratch("share");
        let imgs = TwoImages::new();
        let layout = imgs.write(&dir.path().join("layout"));
        let (driver, store) = open_store(drv, dir.path()).unwrap();
        let report = store.import_report(&layout).unwrap();
        // gzip and zstd blobs of the same tar have one DiffID, so one ChainID: applied once.
        assert_eq!(report.applied.len(), 3, "{drv}");
        assert_eq!(report.existing, vec![imgs.base_gz.diff_id.clone()], "{drv}");
        assert_eq!(names(&store), ["a:latest", "b:latest"]);
        assert_eq!(layers(driver.as_ref()).len(), 3);
        let refs = store.layer_references().unwrap();
        assert_eq!(refs[&imgs.base_gz.diff_id], 2);

        compare_top(
            driver.as_ref(),
            &store,
            "a:latest",
            &[&imgs.base_gz, &imgs.top_a],
            &dir.path().join("ref-a"),
        );
        compare_top(
            driver.as_ref(),
            &store,
            "b:latest",
            &[&imgs.base_zst, &imgs.top_b],
            &dir.path().join("ref-b"),
        );

        // history: top first, sizes as applied, DiffIDs as the config says.
        let h = store.history("b:latest").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].diff_id, imgs.top_b.diff_id);
        assert_eq!(h[0].size, file_bytes(&top_b_entries()));
        assert_eq!(h[1].diff_id, imgs.base_zst.diff_id);
        assert_eq!(h[1].size, file_bytes(&base_entries()));
        // b's base is recorded with b's own (zstd) blob, though a's gzip blob was applied.
        assert_eq!(h[1].blob.as_str(), imgs.base_zst.digest);
        assert_eq!(
            h[0].chain_id,
            Digest::of(format!("{} {}", imgs.base_zst.diff_id, imgs.top_b.diff_id).as_bytes())
        );
        let driver_size = driver
            .diff_size(&layer_id(&h[0].chain_id).unwrap(), None)
            .unwrap();
        assert_eq!(h[0].size, driver_size);

        // Importing again applies nothing.
        let again = store.import_report(&layout).unwrap();
        assert!(again.applied.is_empty());
        assert_eq!(again.existing.len(), 4);
        assert_eq!(layers(driver.as_ref()).len(), 3);
    }
}

#[test]
fn oci_layout_tar_imports_like_its_directory() {
    for drv in &drivers() {
        let dir = scratch("oci-tar");
        let imgs = TwoImages::new();
        let layout = imgs.write(&dir.path().join("layout"));
        let tar = dir.path().join("layout.tar");
        tar_dir(&layout, &tar).unwrap();
        std::fs::remove_dir_all(&layout).unwrap();
        let (driver, store) = open_store(drv, dir.path()).unwrap();
        let records = store.import(&tar).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(names(&store), ["a:latest", "b:latest"]);
        assert_eq!(layers(driver.as_ref()).len(), 3);
        compare_top(
            driver.as_ref(),
            &store,
            "a:latest",
            &[&imgs.base_gz, &imgs.top_a],
            &dir.path().join("ref-a"),
        );
    }
}

#[test]
fn docker_save_tar_imports_with_its_repo_tags_sniffed_layers_and_symlinked_layers() {
    for drv in &drivers() {
        let dir = scratch("docker");
        let base = Layer::new(&base_entries(), Compression::None);
        // docker-save layers carry no media type: this one is gzip and must be sniffed.
        let top = Layer::new(&top_a_entries(), Compression::Gzip);
        let other = Layer::new(&top_b_entries(), Compression::Zstd);
        let save = docker_save(
            &dir.path().join("save"),
            &[
                (&["x:1", "x:latest"], &[base.clone(), top.clone()]),
                (&[], &[base.clone(), other.clone()]),
            ],
        );
        // Older docker writes a layer two images share once, the other a symlink to it; the
        // symlink is the copy that gets read here (the first image's base).
        std::fs::remove_file(save.join("1/layer.tar")).unwrap();
        std::os::unix::fs::symlink("../3/layer.tar", save.join("1/layer.tar")).unwrap();
        let tar = dir.path().join("save.tar");
        tar_dir(&save, &tar).unwrap();
        let (driver, store) = open_store(drv, dir.path()).unwrap();
        let report = store.import_report(&tar).unwrap();
        assert_eq!(report.applied.len(), 3);
        assert_eq!(report.existing.len(), 1);
        let got = names(&store);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.contains(&"x:1".to_owned()) && got.contains(&"x:latest".to_owned()));
        // The untagged image is recorded by its config digest (docker save has no manifest).
        let unnamed = got.iter().find(|n| n.starts_with("sha256:")).unwrap();
        let rec = store.get(unnamed).unwrap();
        assert_eq!(rec.name.as_str(), rec.config.as_str());
        assert_eq!(rec.manifest, None);
        compare_top(
            driver.as_ref(),
            &store,
            "x:1",
            &[&base, &top],
            &dir.path().join("ref"),
        );
    }
}

#[test]
fn containerd_full_name_is_preferred_to_a_tag_only_ref_name() {
    let dir = scratch("containerd-name");
    let mut oci = OciLayout::new(&dir.path().join("layout"));
    let base = Layer::new(&base_entries(), Compression::Gzip);
    let mut desc = oci.manifest(std::slice::from_ref(&base));
    // As `ctr images export` and scripts/oci-image.py write it.
    desc["annotations"] = json!({
        "io.containerd.image.name": "docker.io/library/debian:12",
        "org.opencontainers.image.ref.name": "12",
    });
    oci.push_descriptor(desc);
    let (_driver, store) = open_store("vfs", dir.path()).unwrap();
    let recs = store.import(&oci.finish()).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].name.as_str(), "docker.io/library/debian:12");
}

#[test]
fn index_picks_linux_amd64_and_an_unnamed_image_is_recorded_by_its_manifest_digest() {
    let dir = scratch("platform");
    let mut oci = OciLayout::new(&dir.path().join("layout"));
    let base = Layer::new(&base_entries(), Compression::Gzip);
    let amd64 = oci.manifest(std::slice::from_ref(&base));
    let mut arm64 = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        // Never read: a blob that is not in the layout.
        "digest": Digest::of(b"not here").to_string(),
        "size": 8,
    });
    arm64["platform"] = json!({"os": "linux", "architecture": "arm64"});
    let mut amd64_desc = amd64.clone();
    amd64_desc["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [arm64, amd64_desc],
    }))
    .unwrap();
    let list_digest = oci.blob(&list);
    oci.push_descriptor(json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": list_digest,
        "size": list.len(),
    }));
    let layout = oci.finish();
    let (_driver, store) = open_store("vfs", dir.path()).unwrap();
    let recs = store.import(&layout).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].name.as_str(), amd64["digest"].as_str().unwrap());
    assert_eq!(
        recs[0].manifest.as_ref().map(|d| d.as_str()),
        amd64["digest"].as_str()
    );
}

#[test]
fn remove_keeps_a_shared_base_until_its_last_image_goes() {
    for drv in &drivers() {
        let dir = scratch("remove");
        let imgs = TwoImages::new();
        let layout = imgs.write(&dir.path().join("layout"));
        let (driver, store) = open_store(drv, dir.path()).unwrap();
        store.import(&layout).unwrap();
        let base = layer_id(&imgs.base_gz.diff_id).unwrap();
        let top_a = store.get("a:latest").unwrap().top_layer().unwrap().unwrap();
        let top_b = store.get("b:latest").unwrap().top_layer().unwrap().unwrap();

        let r = store.remove("a:latest").unwrap();
        assert_eq!(r.removed, vec![top_a.clone()]);
        assert!(driver.exists(&base) && driver.exists(&top_b) && !driver.exists(&top_a));
        assert_eq!(names(&store), ["b:latest"]);
        // b still mounts with its base.
        {
            let m = Mounted::new(driver.as_ref(), &top_b);
            assert!(m.path.join("usr/bin/tool").is_file());
        }

        let r = store.remove("b:latest").unwrap();
        assert_eq!(r.removed, vec![top_b, base]);
        assert!(layers(driver.as_ref()).is_empty());
        assert!(names(&store).is_empty());
        assert!(matches!(
            store.remove("b:latest"),
            Err(ImageError::NotFound(_))
        ));
    }
}

const PENDING: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("pending_layers");

#[test]
fn open_sweeps_pending_layers_no_image_names() {
    for drv in &drivers() {
        let dir = scratch("sweep");
        let imgs = TwoImages::new();
        let layout = imgs.write(&dir.path().join("layout"));
        let store_dir = dir.path().join(format!("{drv}-images"));
        let (driver, store) = open_store(drv, dir.path()).unwrap();
        store.import(&layout).unwrap();
        let before = layers(driver.as_ref());
        drop(store);

        // A crash part-way through an import: two layers created, recorded as pending only.
        let x = Digest::of(b"crashed base");
        let y = Digest::of(b"crashed child");
        let (xi, yi) = (layer_id(&x).unwrap(), layer_id(&y).unwrap());
        driver.create(&xi, None, &Default::default()).unwrap();
        driver.create(&yi, Some(&xi), &Default::default()).unwrap();
        {
            let db = redb::Database::create(store_dir.join(DB_FILE)).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(PENDING).unwrap();
                t.insert(x.as_str(), 0).unwrap();
                t.insert(y.as_str(), 1).unwrap();
                // A pending record for a layer an image names: the layer must stay.
                t.insert(imgs.base_gz.diff_id.as_str(), 0).unwrap();
            }
            tx.commit().unwrap();
        }

        let store = ImageStore::open(&store_dir, driver.clone()).unwrap();
        assert_eq!(layers(driver.as_ref()), before, "{drv}");
        assert_eq!(names(&store), ["a:latest", "b:latest"]);
        drop(store);
        let db = redb::Database::create(store_dir.join(DB_FILE)).unwrap();
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(PENDING).unwrap();
        assert_eq!(redb::ReadableTableMetadata::len(&t).unwrap(), 0);
    }
}

/// Imports a good image, then `bad` (built in the given directory, with the good image's
/// base already present) and checks the error, and that the driver's layers and the image
/// list are as they were, also after reopening the store.
fn assert_rejected(
    case: &str,
    limits: ImportLimits,
    bad: impl Fn(&Path, &Layer) -> std::path::PathBuf,
    expect: impl Fn(&ImageError) -> bool,
) {
    for drv in &drivers() {
        let dir = scratch(case);
        let base = Layer::new(&base_entries(), Compression::Gzip);
        let top = Layer::new(&top_a_entries(), Compression::Gzip);
        let mut good = OciLayout::new(&dir.path().join("good"));
        good.image(Some("good"), &[base.clone(), top]);
        let good = good.finish();
        let (driver, store) = open_store(drv, dir.path()).unwrap();
        let store = store.with_limits(limits);
        store.import(&good).unwrap();
        let layers_before = layers(driver.as_ref());
        let names_before = names(&store);

        let path = bad(&dir.path().join("bad"), &base);
        let err = store.import(&path).expect_err(case);
        assert!(expect(&err), "{drv} {case}: unexpected error: {err:?}");
        assert!(!err.to_string().is_empty());
        assert_eq!(layers(driver.as_ref()), layers_before, "{drv} {case}");
        assert_eq!(names(&store), names_before, "{drv} {case}");
        drop(store);
        let store =
            ImageStore::open(&dir.path().join(format!("{drv}-images")), driver.clone()).unwrap();
        assert_eq!(layers(driver.as_ref()), layers_before, "{drv} {case}");
        assert_eq!(names(&store), names_before, "{drv} {case}");
    }
}

/// A layer that is fine, and new to the store: applied before the bad one, so the rollback
/// has something to remove.
fn fresh_mid() -> Layer {
    Layer::new(&top_b_entries(), Compression::Gzip)
}

/// An OCI layout of one image `bad`: the shared base, a fresh middle layer, then `last`.
fn layout_with(dir: &Path, base: &Layer, last: Layer) -> std::path::PathBuf {
    let mut oci = OciLayout::new(dir);
    oci.image(Some("bad"), &[base.clone(), fresh_mid(), last]);
    oci.finish()
}

#[test]
fn wrong_blob_digest_is_rejected_naming_the_blob() {
    assert_rejected(
        "blob-digest",
        ImportLimits::default(),
        |dir, base| {
            let mut l = Layer::new(&top_a_entries(), Compression::Gzip);
            // Same tar, other (zstd) bytes, stored under the gzip blob's digest.
            let other = zstd::encode_all(&l.tar[..], 19).unwrap();
            l.blob = other;
            l.media_type = media_type(Compression::Zstd).to_owned();
            layout_with(dir, base, l)
        },
        |e| matches!(e, ImageError::DigestMismatch { blob, .. } if blob.starts_with("blobs/sha256/")),
    );
}

#[test]
fn wrong_diff_id_is_rejected_naming_the_layer() {
    assert_rejected(
        "diff-id",
        ImportLimits::default(),
        |dir, base| {
            let mut l = Layer::new(&top_a_entries(), Compression::Gzip);
            l.diff_id = Digest::of(b"some other tar");
            layout_with(dir, base, l)
        },
        |e| matches!(e, ImageError::DiffIdMismatch { index: 2, .. }),
    );
}

fn truncated(c: Compression) -> impl Fn(&Path, &Layer) -> std::path::PathBuf {
    move |dir, base| {
        let mut l = Layer::new(&top_b_entries(), c);
        let cut = l.blob.len() / 2;
        l.blob.truncate(cut);
        l.digest = Digest::of(&l.blob).to_string();
        layout_with(dir, base, l)
    }
}

#[test]
fn truncated_gzip_is_rejected_naming_the_blob() {
    assert_rejected(
        "trunc-gzip",
        ImportLimits::default(),
        truncated(Compression::Gzip),
        |e| matches!(e, ImageError::Decompression { .. }),
    );
}

#[test]
fn truncated_zstd_is_rejected_naming_the_blob() {
    assert_rejected(
        "trunc-zstd",
        ImportLimits::default(),
        truncated(Compression::Zstd),
        |e| matches!(e, ImageError::Decompression { .. }),
    );
}

fn zeros(len: usize, c: Compression) -> Layer {
    Layer::new(
        &[
            Entry::Dir("z", 0o755),
            Entry::File("z/zeros", 0o644, vec![0; len]),
        ],
        c,
    )
}

#[test]
fn layer_past_the_size_limit_is_rejected() {
    let limits = ImportLimits {
        max_layer_bytes: 1 << 20,
        ..ImportLimits::default()
    };
    assert_rejected(
        "too-large",
        limits,
        |dir, base| layout_with(dir, base, zeros(4 << 20, Compression::None)),
        |e| matches!(e, ImageError::LayerTooLarge { limit, .. } if *limit == 1 << 20),
    );
}

#[test]
fn decompression_bomb_is_rejected_by_its_ratio() {
    let limits = ImportLimits {
        max_ratio: 100,
        ratio_floor: 1 << 20,
        ..ImportLimits::default()
    };
    assert_rejected(
        "ratio",
        limits,
        |dir, base| layout_with(dir, base, zeros(16 << 20, Compression::Gzip)),
        |e| matches!(e, ImageError::CompressionRatio { limit: 100, .. }),
    );
}

#[test]
fn manifest_naming_a_missing_blob_is_rejected() {
    assert_rejected(
        "missing",
        ImportLimits::default(),
        |dir, base| {
            let mut l = Layer::new(&top_a_entries(), Compression::Gzip);
            l.write_blob = false;
            layout_with(dir, base, l)
        },
        |e| matches!(e, ImageError::MissingBlob { blob, .. } if blob.starts_with("blobs/sha256/")),
    );
}

#[test]
fn digests_that_are_not_lowercase_sha256_hex_are_rejected() {
    for (case, digest) in [
        ("dotdot", "sha256:../../etc/passwd".to_owned()),
        (
            "upper",
            format!("sha256:{}", Digest::of(b"x").hex().to_uppercase()),
        ),
        ("sha512", format!("sha512:{}", Digest::of(b"x").hex())),
    ] {
        assert_rejected(
            case,
            ImportLimits::default(),
            |dir, base| {
                let mut l = Layer::new(&top_a_entries(), Compression::Gzip);
                l.digest = digest.clone();
                l.write_blob = false;
                layout_with(dir, base, l)
            },
            |e| matches!(e, ImageError::InvalidDigest { digest: d, .. } if *d == digest),
        );
    }
}

#[test]
fn manifest_and_config_with_wrong_digests_are_rejected() {
    for which in ["manifest", "config"] {
        assert_rejected(
            which,
            ImportLimits::default(),
            |dir, base| {
                let mut oci = OciLayout::new(dir);
                let layers = [base.clone(), fresh_mid()];
                let desc = oci.manifest(&layers);
                let manifest_digest: Digest =
                    serde_json::from_value(desc["digest"].clone()).unwrap();
                let path = dir.join(manifest_digest.blob_path());
                let target = if which == "manifest" {
                    path
                } else {
                    let m: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                    let c: Digest = serde_json::from_value(m["config"]["digest"].clone()).unwrap();
                    dir.join(c.blob_path())
                };
                // Same length, other bytes.
                let mut bytes = std::fs::read(&target).unwrap();
                let last = bytes.len() - 1;
                bytes[last - 1] = b' ';
                bytes.swap(last - 1, last);
                std::fs::write(&target, bytes).unwrap();
                oci.push_descriptor(desc);
                oci.finish()
            },
            |e| matches!(e, ImageError::DigestMismatch { .. }),
        );
    }
}

#[test]
fn docker_save_paths_leaving_the_archive_are_rejected() {
    for (case, path) in [
        ("absolute", "/etc/passwd"),
        ("dotdot", "../outside/layer.tar"),
        ("inner-dotdot", "1/../../etc/passwd"),
    ] {
        assert_rejected(
            case,
            ImportLimits::default(),
            |dir, base| {
                let save = docker_save(dir, &[(&["bad:1"], &[base.clone(), fresh_mid()])]);
                let m = save.join("manifest.json");
                let mut v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
                v[0]["Layers"][1] = json!(path);
                std::fs::write(&m, serde_json::to_vec(&v).unwrap()).unwrap();
                save
            },
            |e| matches!(e, ImageError::UnsafePath { path: p, .. } if p == path),
        );
    }
}

#[test]
fn blob_symlink_out_of_a_layout_directory_is_rejected() {
    assert_rejected(
        "symlink",
        ImportLimits::default(),
        |dir, base| {
            let l = Layer::new(&top_a_entries(), Compression::Gzip);
            let layout = layout_with(dir, base, l.clone());
            let blob = layout
                .join("blobs/sha256")
                .join(l.digest.trim_start_matches("sha256:"));
            std::fs::remove_file(&blob).unwrap();
            std::os::unix::fs::symlink("/etc/passwd", &blob).unwrap();
            layout
        },
        |e| matches!(e, ImageError::UnsafePath { .. }),
    );
}

#[test]
fn docker_save_config_that_does_not_match_its_name_is_rejected() {
    assert_rejected(
        "docker-config",
        ImportLimits::default(),
        |dir, base| {
            let save = docker_save(dir, &[(&["bad:1"], &[base.clone(), fresh_mid()])]);
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(save.join("manifest.json")).unwrap())
                    .unwrap();
            let config = save.join(m[0]["Config"].as_str().unwrap());
            let mut v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
            v["created"] = json!("1999-01-01T00:00:00Z");
            std::fs::write(&config, serde_json::to_vec(&v).unwrap()).unwrap();
            save
        },
        |e| matches!(e, ImageError::DigestMismatch { blob, .. } if blob.ends_with(".json")),
    );
}

#[test]
fn reimporting_a_name_replaces_the_image_and_removes_layers_only_the_old_one_used() {
    for drv in &drivers() {
        let dir = scratch("retag");
        let imgs = TwoImages::new();
        let mut v1 = OciLayout::new(&dir.path().join("v1"));
        v1.image(Some("app"), &[imgs.base_gz.clone(), imgs.top_a.clone()]);
        let v1 = v1.finish();
        let mut v2 = OciLayout::new(&dir.path().join("v2"));
        v2.image(Some("app"), &[imgs.base_zst.clone(), imgs.top_b.clone()]);
        let v2 = v2.finish();
        let (driver, store) = open_store(drv, dir.path()).unwrap();
        store.import(&v1).unwrap();
        let old_top = store.get("app").unwrap().top_layer().unwrap().unwrap();
        let report = store.import_report(&v2).unwrap();
        assert_eq!(report.applied.len(), 1);
        assert_eq!(report.existing.len(), 1);
        let new_top = store.get("app").unwrap().top_layer().unwrap().unwrap();
        assert!(
            !driver.exists(&old_top),
            "{drv}: the old top layer is removed"
        );
        assert!(driver.exists(&new_top));
        assert_eq!(layers(driver.as_ref()).len(), 2);
        assert_eq!(names(&store), ["app"]);
    }
}

#[test]
fn removing_an_image_whose_layer_is_mounted_defers_the_layer_to_a_later_open() {
    for drv in &drivers() {
        let dir = scratch("deferred");
        let imgs = TwoImages::new();
        let layout = imgs.write(&dir.path().join("layout"));
        let store_dir = dir.path().join(format!("{drv}-images"));
        let (driver, store) = open_store(drv, dir.path()).unwrap();
        store.import(&layout).unwrap();
        let top_b = store.get("b:latest").unwrap().top_layer().unwrap().unwrap();
        let base = layer_id(&imgs.base_gz.diff_id).unwrap();
        store.remove("a:latest").unwrap();
        let mounted = Mounted::new(driver.as_ref(), &top_b);
        let r = store.remove("b:latest").unwrap();
        assert!(r.removed.is_empty(), "{drv}: {r:?}");
        assert_eq!(r.kept, vec![top_b.clone(), base.clone()]);
        assert!(names(&store).is_empty());
        drop(mounted);
        drop(store);
        let _store = ImageStore::open(&store_dir, driver.clone()).unwrap();
        assert!(layers(driver.as_ref()).is_empty(), "{drv}: swept at open");
    }
}
