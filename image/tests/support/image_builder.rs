//! Builds test images: layer tars from files described in the test, OCI image layouts and
//! `docker save` archives, and a reference extraction to compare mounted layers against.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use graphdriver_api::GraphDriver;
use graphdriver_api::MountOpts;
use graphdriver_image::{Compression, Digest, ImageStore};
use serde_json::json;

/// One entry of a layer tar.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A directory with a mode.
    Dir(&'static str, u32),
    /// A regular file with a mode and content.
    File(&'static str, u32, Vec<u8>),
    /// A symlink and its target.
    Symlink(&'static str, &'static str),
    /// An OCI whiteout of the path.
    Whiteout(&'static str),
}

/// A layer tar in memory.
pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(size);
        h
    };
    for e in entries {
        match e {
            Entry::Dir(p, mode) => {
                let mut h = header(tar::EntryType::Directory, *mode, 0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::File(p, mode, data) => {
                let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                b.append_data(&mut h, p, data.as_slice()).unwrap();
            }
            Entry::Symlink(p, target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, p, target).unwrap();
            }
            Entry::Whiteout(p) => {
                let path = Path::new(p);
                let name = format!(".wh.{}", path.file_name().unwrap().to_str().unwrap());
                let wh = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.join(name),
                    _ => PathBuf::from(name),
                };
                let mut h = header(tar::EntryType::Regular, 0o644, 0);
                b.append_data(&mut h, wh, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// The bytes of `tar` compressed as `c`.
pub fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    use std::io::Write;
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

/// The OCI media type of a layer compressed as `c`.
pub fn media_type(c: Compression) -> &'static str {
    match c {
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// A layer as an image names it.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// The blob as stored.
    pub blob: Vec<u8>,
    /// The media type in the manifest.
    pub media_type: String,
    /// The DiffID the config names (normally the digest of `tar`).
    pub diff_id: Digest,
    /// The blob digest the manifest names (normally the digest of `blob`).
    pub digest: String,
    /// Whether the blob is written to the layout.
    pub write_blob: bool,
}

impl Layer {
    /// A layer of `entries` compressed as `c`.
    pub fn new(entries: &[Entry], c: Compression) -> Layer {
        let tar = layer_tar(entries);
        let blob = compress(&tar, c);
        Layer {
            diff_id: Digest::of(&tar),
            digest: Digest::of(&blob).to_string(),
            tar,
            blob,
            media_type: media_type(c).to_owned(),
            write_blob: true,
        }
    }
}

/// An OCI image layout being written.
pub struct OciLayout {
    pub dir: PathBuf,
    index: Vec<serde_json::Value>,
}

impl OciLayout {
    /// An empty layout in `dir`.
    pub fn new(dir: &Path) -> OciLayout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        OciLayout {
            dir: dir.to_owned(),
            index: Vec::new(),
        }
    }

    /// Writes a blob and returns its digest.
    pub fn blob(&self, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        std::fs::write(self.dir.join(d.blob_path()), bytes).unwrap();
        d
    }

    /// The config of an image of `layers`.
    pub fn config(layers: &[Layer]) -> Vec<u8> {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        serde_json::to_vec(&json!({
            "created": "2024-01-02T03:04:05Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap()
    }

    /// Writes an image's blobs (not yet in the index) and returns the manifest descriptor.
    pub fn manifest(&self, layers: &[Layer]) -> serde_json::Value {
        let config = Self::config(layers);
        let config_digest = self.blob(&config);
        let mut descs = Vec::new();
        for l in layers {
            if l.write_blob {
                std::fs::write(
                    self.dir
                        .join("blobs/sha256")
                        .join(l.digest.trim_start_matches("sha256:")),
                    &l.blob,
                )
                .unwrap();
            }
            descs.push(json!({
                "mediaType": l.media_type,
                "digest": l.digest,
                "size": l.blob.len(),
            }));
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": descs,
        }))
        .unwrap();
        let d = self.blob(&manifest);
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d,
            "size": manifest.len(),
        })
    }

    /// Adds an image named `name` (no name when `None`) and returns its manifest digest.
    pub fn image(&mut self, name: Option<&str>, layers: &[Layer]) -> Digest {
        let mut desc = self.manifest(layers);
        if let Some(n) = name {
            desc["annotations"] = json!({"org.opencontainers.image.ref.name": n});
        }
        let d: Digest = serde_json::from_value(desc["digest"].clone()).unwrap();
        self.index.push(desc);
        d
    }

    /// Adds a raw descriptor to index.json.
    pub fn push_descriptor(&mut self, desc: serde_json::Value) {
        self.index.push(desc);
    }

    /// Writes index.json.
    pub fn finish(&self) -> PathBuf {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": self.index,
        });
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        self.dir.clone()
    }
}

/// Tars the directory `dir` into `out` (entries named `./...`, as `tar -C dir .` does).
pub fn tar_dir(dir: &Path, out: &Path) -> Result<()> {
    let st = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()?;
    if !st.success() {
        bail!("tar -cf {} failed", out.display());
    }
    Ok(())
}

/// A `docker save` archive directory: `manifest.json`, `<hex>.json` configs, `<n>/layer.tar`.
pub fn docker_save(dir: &Path, images: &[(&[&str], &[Layer])]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut manifest = Vec::new();
    let mut n = 0;
    for (tags, layers) in images {
        let config = OciLayout::config(layers);
        let config_name = format!("{}.json", Digest::of(&config).hex());
        std::fs::write(dir.join(&config_name), &config).unwrap();
        let mut paths = Vec::new();
        for l in *layers {
            n += 1;
            let p = format!("{n}/layer.tar");
            std::fs::create_dir_all(dir.join(n.to_string())).unwrap();
            std::fs::write(dir.join(&p), &l.blob).unwrap();
            paths.push(p);
        }
        manifest.push(json!({"Config": config_name, "RepoTags": tags, "Layers": paths}));
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    dir.to_owned()
}

/// Extracts layer tars in order into `dir` with GNU tar, applying whiteouts by hand: the
/// reference a mounted top layer is compared with.
pub fn reference_extract(dir: &Path, layers: &[&Layer]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for l in layers {
        let tar = dir.with_extension("layer.tar");
        std::fs::write(&tar, &l.tar)?;
        let st = Command::new("tar")
            .args(["--same-owner", "-p", "-xf"])
            .arg(&tar)
            .arg("-C")
            .arg(dir)
            .status()?;
        std::fs::remove_file(&tar)?;
        if !st.success() {
            bail!("tar -xf failed");
        }
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d)? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(target) = name.strip_prefix(".wh.") {
                    std::fs::remove_file(e.path())?;
                    let t = d.join(target);
                    if t.is_dir() {
                        std::fs::remove_dir_all(&t)?;
                    } else {
                        std::fs::remove_file(&t).ok();
                    }
                } else if e.file_type()?.is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    Ok(())
}

/// A scratch directory for one test, under `GRAPHDRIVER_IMAGE_SCRATCH` (the zfs VM run points
/// it at a pool) or /var/tmp/graphdriver-image-tests.
pub fn scratch(name: &str) -> Scratch {
    let base = std::env::var_os("GRAPHDRIVER_IMAGE_SCRATCH").map_or_else(
        || PathBuf::from("/var/tmp/graphdriver-image-tests"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&base).unwrap();
    Scratch(
        tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in(base)
            .unwrap(),
    )
}

/// A scratch directory, removed on drop with whatever is mounted below it (btrfs's loop
/// image stays mounted after its driver is dropped, as it would for the next open).
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut roots = ZFS_ROOTS.lock().unwrap_or_else(|p| p.into_inner());
        // dropping a dataset unmounts and destroys it
        roots.retain(|(root, _)| !root.starts_with(self.0.path()));
        drop(roots);
        graphdriver_conformance::unmount_below(self.0.path());
    }
}

/// The datasets made for zfs roots, each destroyed with the scratch directory it is in.
static ZFS_ROOTS: std::sync::Mutex<Vec<(PathBuf, graphdriver_conformance::fixture::ZfsDataset)>> =
    std::sync::Mutex::new(Vec::new());

/// For zfs, a dataset of its own mounted at `root` (made once: a reopen finds it), below the
/// dataset that holds it: roots that shared one would share the layer names below it.
fn zfs_root(root: &Path) -> Result<()> {
    let mounts = graphdriver_kit::fs::mountinfo::MountTable::read()?;
    let Some(m) = mounts.holding(root).filter(|m| m.fstype == "zfs") else {
        bail!("{} is not on a zfs dataset", root.display());
    };
    if m.point != root {
        let ds = graphdriver_conformance::fixture::ZfsDataset::new(&m.source, root)?;
        let mut roots = ZFS_ROOTS.lock().unwrap_or_else(|p| p.into_inner());
        roots.push((root.to_owned(), ds));
    }
    Ok(())
}

/// The drivers the tests run on, each opened on its own root under a test's scratch
/// directory: `GRAPHDRIVER_IMAGE_DRIVERS` (a comma-separated list; the VM scripts name
/// devmapper and zfs there, zfs with the scratch directories on a pool), by default the host
/// backends vfs, overlay2 and btrfs (on a loop image of its own).
pub fn drivers() -> Vec<String> {
    match std::env::var("GRAPHDRIVER_IMAGE_DRIVERS") {
        Ok(list) if !list.is_empty() => list.split(',').map(str::to_owned).collect(),
        _ => ["vfs", "overlay2", "btrfs"].map(str::to_owned).to_vec(),
    }
}

/// Opens driver `name` under `dir/<name>` and an image store beside it.
pub fn open_store(name: &str, dir: &Path) -> Result<(Arc<dyn GraphDriver>, ImageStore)> {
    let mut opts = BTreeMap::new();
    if name == "btrfs" {
        // its own btrfs on a sparse image, below the root, wherever the scratch directory is
        opts.insert("btrfs.loopback".to_owned(), "2G".to_owned());
    }
    if name == "zfs" {
        std::fs::create_dir_all(dir.join(name))?;
        zfs_root(&dir.join(name))?;
    }
    let driver: Arc<dyn GraphDriver> = Arc::from(
        graphdriver_backends::open(name, &dir.join(name), &opts)
            .with_context(|| format!("open {name}"))?,
    );
    let store = ImageStore::open(&dir.join(format!("{name}-images")), driver.clone())?;
    Ok((driver, store))
}

/// The driver's layers, sorted.
pub fn layers(d: &dyn GraphDriver) -> Vec<String> {
    let mut v: Vec<String> = d.list().unwrap().iter().map(|l| l.to_string()).collect();
    v.sort();
    v
}

/// The store's image names.
pub fn names(s: &ImageStore) -> Vec<String> {
    s.list()
        .unwrap()
        .iter()
        .map(|r| r.name.to_string())
        .collect()
}

/// A mount of a layer, released on drop.
pub struct Mounted<'a> {
    pub driver: &'a dyn GraphDriver,
    pub id: graphdriver_api::LayerId,
    pub path: PathBuf,
}

impl<'a> Mounted<'a> {
    pub fn new(driver: &'a dyn GraphDriver, id: &graphdriver_api::LayerId) -> Mounted<'a> {
        let path = driver.get(id, &MountOpts::default()).unwrap();
        Mounted {
            driver,
            id: id.clone(),
            path,
        }
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = self.driver.put(&self.id);
    }
}
