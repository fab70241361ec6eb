//! The backends this build knows, by name.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use graphdriver_api::GraphDriver;

/// Names of the drivers compiled in.
pub fn names() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "vfs") {
        v.push("vfs");
    }
    if cfg!(feature = "overlay2") {
        v.push("overlay2");
    }
    if cfg!(feature = "btrfs") {
        v.push("btrfs");
    }
    if cfg!(feature = "devmapper") {
        v.push("devmapper");
    }
    if cfg!(feature = "zfs") {
        v.push("zfs");
    }
    v
}

/// Opens driver `name` on `root`.
pub fn open(
    name: &str,
    root: &Path,
    opts: &BTreeMap<String, String>,
) -> Result<Box<dyn GraphDriver>> {
    std::fs::create_dir_all(root)?;
    match name {
        #[cfg(feature = "vfs")]
        "vfs" => Ok(Box::new(graphdriver_vfs::open(root, opts)?)),
        #[cfg(feature = "overlay2")]
        "overlay2" => Ok(Box::new(graphdriver_overlay2::open(root, opts)?)),
        #[cfg(feature = "btrfs")]
        "btrfs" => Ok(Box::new(graphdriver_btrfs::open(root, opts)?)),
        #[cfg(feature = "devmapper")]
        "devmapper" => Ok(Box::new(graphdriver_devmapper::open(root, opts)?)),
        #[cfg(feature = "zfs")]
        "zfs" => Ok(Box::new(graphdriver_zfs::open(root, opts)?)),
        other => bail!(
            "unknown driver {other:?} (this build has: {})",
            names().join(", ")
        ),
    }
}

/// The filesystem a driver's scratch roots are made on, for the suite and the benchmarks.
pub fn scratch_fs(name: &str) -> &'static str {
    match name {
        "btrfs" => "btrfs",
        "zfs" => "zfs",
        _ => "ext4",
    }
}

/// Whether this machine's kernel offers what driver `name` needs, found by trying the
/// cheapest real thing (opening `/dev/mapper/control` for devmapper, `/dev/zfs` existing for zfs). For choosing default
/// benchmark targets; the suite and the drivers find out for themselves.
pub fn kernel_offers(name: &str) -> bool {
    match name {
        "devmapper" => std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/mapper/control")
            .is_ok(),
        "zfs" => Path::new("/dev/zfs").exists(),
        _ => true,
    }
}

/// Makes `dir`, the directory of one conformance case, ready for a fresh driver of `name`.
/// For zfs on a zfs scratch filesystem: a dataset of its own mounted at `dir`, so the case's
/// layers (datasets below the one holding the root) are its own; destroyed when the value
/// is dropped. Nothing for the other drivers.
pub fn case_dir(name: &str, dir: &Path) -> Result<Option<crate::fixture::ZfsDataset>> {
    std::fs::create_dir_all(dir)?;
    #[cfg(feature = "zfs")]
    if name == "zfs" {
        let parent = dir.parent().unwrap_or(dir).canonicalize()?;
        let mounts = graphdriver_api::mountinfo::MountTable::read()?;
        if let Some(m) = mounts.holding(&parent) {
            if m.fstype == "zfs" {
                return Ok(Some(crate::fixture::ZfsDataset::new(&m.source, dir)?));
            }
        }
    }
    let _ = name;
    Ok(None)
}
