//! The OCI layer archive, both directions.
//!
//! **Export** ([`export_tree`], [`export_changes`]) writes PAX tars that are deterministic: the
//! same content gives the same bytes (sorted entries, no user or group names, no access times,
//! PAX records in a fixed order). Every xattr is written except the backend-private
//! `trusted.overlay.*` and `user.overlay.*`; hardlinked files are written once and then as
//! links; sockets are skipped; deletions are `.wh.<name>` entries.
//!
//! **Apply** ([`apply`]) runs in two phases so that nothing half-applied is ever visible:
//!
//! 1. *Stage*: the archive is extracted into a private directory beside the layer, resolving
//!    every path one component at a time without following symlinks; `..`, absolute names,
//!    malformed whiteouts and links out of the layer are rejected with
//!    [`DriverError::InvalidArchive`](crate::DriverError::InvalidArchive) naming the entry.
//!    An error or a crash here leaves the layer untouched.
//! 2. *Merge*: whiteouts and opaque markers delete what lower layers had (moved to a trash
//!    directory), then the staged entries are renamed into the layer. The journal marks the
//!    switch between the phases; a crash during the merge is finished at the next open
//!    ([`resume_merge`]).
//!
//! Every backend gives an archive the same meaning. Lookups go through the view the
//! container has (the layer over the layers below it, see `merged_view.rs`): a whiteout or an
//! opaque directory ends a lookup on any component of a path, and a directory the archive only
//! implies follows a symlink of the layer inside its root and is created where missing
//! (containerd's rule); one that exists keeps its metadata, mtime included, as the archive
//! does not describe it (so applying the same layers gives the same tree and the same diff,
//! and `image save` the same image, on every backend). An opaque marker of the layer root hides nothing (overlayfs ignores
//! opaque on its upper root). NUL in any name and names beginning with [`STAGING_PREFIX`] at
//! any depth are refused.

mod entry_name;
mod export;
mod header;
mod manifest;
mod merge;
mod merged_view;
mod prefetch;
mod reader;
mod stage;
mod writer;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use entry_name::{components, marker, Marker, OPAQUE_MARKER, WHITEOUT_PREFIX};
pub use export::{export_changes, export_in_background, export_tree, DiffReader};
pub use header::{Header, Kind};
pub use reader::{ReadError, TarReader};
pub use writer::TarWriter;

use manifest::Manifest;

use crate::{DriverError, IoContext, Result};

/// Staging directories are named with this prefix; a backend may put them inside the layer
/// itself (btrfs: renames cannot leave a subvolume), so archive entries at the layer root
/// that begin with it are refused.
pub const STAGING_PREFIX: &str = ".graphdriver-apply.";

/// Where an archive is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyTarget {
    /// The layer's directory, holding its full content.
    pub dir: PathBuf,
    /// A directory on the same mount as `dir` for staging (renames must not cross mounts).
    pub staging_parent: PathBuf,
    /// For a backend whose layer directory holds only the layer's own changes over the
    /// layers below (overlay's upper directory): those layers' directories, closest first.
    /// Then deletions are written as overlay whiteouts (character device 0:0) and opaque
    /// directories as `trusted.overlay.opaque=y` (see `overlay_xattrs`), directories the archive only implies take
    /// the metadata of the lower directory they shadow, and hardlinks to lower files are
    /// copies. Empty for backends whose layer directory holds the whole tree.
    pub lowers: Vec<PathBuf>,
    /// Which xattrs mark opaque directories over `lowers`.
    pub overlay_xattrs: OverlayXattrs,
}

/// Where overlayfs's own xattrs live in an overlay layer: `trusted.overlay.*` (the default,
/// which only the initial user namespace's CAP_SYS_ADMIN may set), or `user.overlay.*`
/// (overlayfs's `userxattr` option: what an unprivileged user in a user namespace can set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlayXattrs {
    /// `trusted.overlay.*`.
    #[default]
    Trusted,
    /// `user.overlay.*`, mounted with `userxattr`.
    User,
}

impl OverlayXattrs {
    /// The xattr that makes a directory opaque (value `y`).
    pub fn opaque(self) -> &'static std::ffi::CStr {
        match self {
            OverlayXattrs::Trusted => c"trusted.overlay.opaque",
            OverlayXattrs::User => c"user.overlay.opaque",
        }
    }
}

/// Applies `tar` to `target.dir` through the empty directory `staging`, calling `on_merge`
/// once staging succeeded and before the layer changes (the caller journals that moment).
/// Returns the bytes of regular-file data applied (hardlinks counted once).
pub fn apply(
    tar: &mut dyn Read,
    target: &ApplyTarget,
    staging: &Path,
    on_merge: &mut dyn FnMut() -> Result<()>,
) -> Result<u64> {
    let tree = staging.join("tree");
    for d in [&tree, &staging.join("trash")] {
        std::fs::create_dir(d).ctx("create directory", d)?;
    }
    let mut bases = vec![target.dir.clone()];
    bases.extend(target.lowers.iter().cloned());
    let opaque = target.overlay_xattrs.opaque();
    let (manifest, size) = stage::stage(tar, &tree, &bases, opaque)?;
    manifest.save(&staging.join("manifest"))?;
    crate::failpoint::hit("apply.staged");
    on_merge()?;
    crate::failpoint::hit("apply.merge");
    // The merge only renames and sets metadata, and every step can be repeated: a transient
    // failure gets one more try before the caller leaves it to recovery at the next open.
    // When that fails too, both failures are reported.
    let Err(first) = merge::merge(staging, &target.dir, &target.lowers, opaque, &manifest) else {
        return Ok(size);
    };
    merge::merge(staging, &target.dir, &target.lowers, opaque, &manifest).map_err(|error| {
        DriverError::RetryFailed {
            error: Box::new(error),
            first: Box::new(first),
        }
    })?;
    Ok(size)
}

/// Finishes a merge that a crash interrupted (see [`apply`]); `overlay_xattrs` as the
/// layer's [`ApplyTarget`] says.
pub fn resume_merge(
    staging: &Path,
    target: &Path,
    lowers: &[PathBuf],
    overlay_xattrs: OverlayXattrs,
) -> Result<()> {
    let manifest = Manifest::load(&staging.join("manifest"))?;
    merge::merge(staging, target, lowers, overlay_xattrs.opaque(), &manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_that_fails_on_its_retry_too_reports_both_failures() {
        let dir = tempfile::tempdir().unwrap();
        let (layer, staging) = (dir.path().join("layer"), dir.path().join("staging"));
        std::fs::create_dir(&layer).unwrap();
        std::fs::create_dir(&staging).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "file", &b"hi"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let target = ApplyTarget {
            dir: layer.clone(),
            staging_parent: dir.path().to_owned(),
            lowers: Vec::new(),
            overlay_xattrs: OverlayXattrs::Trusted,
        };
        // every merge opens the trash first: without it both tries fail
        let trash = staging.join("trash");
        let err = apply(&mut &tar[..], &target, &staging, &mut || {
            std::fs::remove_dir(&trash).unwrap();
            Ok(())
        })
        .unwrap_err();
        let DriverError::RetryFailed { error, first } = &err else {
            panic!("not both failures: {err:?}");
        };
        for e in [error, first] {
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e:?}");
        }
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        assert!(
            err.to_string().ends_with("; the try before failed too"),
            "{err}"
        );
        assert!(!layer.join("file").exists());
    }
}
