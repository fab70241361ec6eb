//! The vfs graph driver: every layer is a plain directory holding a full copy of its parent.
//!
//! Copies use `FICLONE` where the filesystem can share extents (btrfs, xfs with reflink), then
//! `copy_file_range`, then plain reads and writes; holes, hardlinks within the copy, every
//! xattr, ownership, modes, nanosecond timestamps, devices, fifos and symlinks are kept. On a
//! reflink filesystem a child costs metadata only; elsewhere it costs a full copy, which is
//! why vfs is the reference backend rather than a fast one.
//!
//! `get` bind-mounts the layer's directory (read-only when it has children) at
//! `<root>/vfs/mnt/<id>`, so mount counts can be checked against the kernel like every other
//! backend's.
//!
//! Layout: `<root>/vfs/dir/<id>` holds the layer, `<root>/vfs/mnt/<id>` its mount point.
//! Changes and diffs are the shared [`NaiveDiff`](graphdriver_kit::NaiveDiff).

mod copy;

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use graphdriver_api::{CreateOpts, IoContext, LayerId, Result, Status};
use graphdriver_kit::archive::ApplyTarget;
use graphdriver_kit::fs::quota::ProjectQuota;
use graphdriver_kit::options::{DriverOptions, OptionParser, StoreOptions};
use graphdriver_kit::store::{Backend, LayerStore};
use graphdriver_kit::{fs::layer_mount, fs::tree, fs::BackingFs};

pub use copy::copy_tree;
pub use graphdriver_kit::fs::copy::CopyStats;

/// The vfs driver: the shared layer store over [`Vfs`].
pub type VfsDriver = LayerStore<Vfs>;

/// vfs's options: only the layer store's (`store.*`, see
/// [`graphdriver_kit::options`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VfsOptions {
    /// The layer store's.
    pub store: StoreOptions,
}

impl DriverOptions for VfsOptions {
    const DRIVER: &'static str = "vfs";

    fn set(&mut self, _: &OptionParser<'_>, _: &str, _: &str) -> Result<bool> {
        Ok(false) // no option of its own
    }

    fn store_mut(&mut self) -> &mut StoreOptions {
        &mut self.store
    }
}

graphdriver_kit::driver_options!(VfsOptions);

/// Opens (creating if needed) the vfs driver under `root` (its data goes in `<root>/vfs`),
/// with options as `key=value` (see [`VfsOptions`]); an unknown option is an error.
pub fn open(root: &Path, opts: &BTreeMap<String, String>) -> Result<VfsDriver> {
    open_with(root, &VfsOptions::try_from(opts)?)
}

/// [`open`] with typed options.
pub fn open_with(root: &Path, opts: &VfsOptions) -> Result<VfsDriver> {
    // canonical, so mount points compare equal to what /proc/self/mountinfo lists
    std::fs::create_dir_all(root).ctx("create directory", root)?;
    let root = &root.canonicalize().ctx("resolve", root)?;
    let home = root.join("vfs");
    for d in ["dir", "mnt", "trash"] {
        let p = home.join(d);
        std::fs::create_dir_all(&p).ctx("create directory", &p)?;
    }
    tree::sweep(&home.join("trash"))?;
    let quota = ProjectQuota::probe(&home.join("dir"), home.join("quota-projid"))?;
    LayerStore::open_with(
        &home,
        Vfs {
            home: home.clone(),
            quota,
        },
        opts.store.clone(),
    )
}

/// The vfs backend: directories and full copies.
#[derive(Debug)]
pub struct Vfs {
    home: PathBuf,
    /// Project quotas, or why there are none here.
    quota: std::result::Result<ProjectQuota, String>,
}

impl Vfs {
    /// The directory that holds layer `id`.
    pub fn dir(&self, id: &LayerId) -> PathBuf {
        self.home.join("dir").join(id.as_str())
    }
}

impl Backend for Vfs {
    fn name(&self) -> &'static str {
        "vfs"
    }

    fn make(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<BTreeMap<String, String>> {
        let quota = ProjectQuota::for_request(&self.quota, opts.size_limit, "vfs")?;
        let dir = self.dir(id);
        match parent {
            Some(p) => {
                copy_tree(&self.dir(p), &dir).ctx("copy parent layer into", &dir)?;
            }
            None => {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&dir)
                    .ctx("create directory", &dir)?;
                // explicit: the umask must not shape a layer root
                rustix::fs::chmod(&dir, rustix::fs::Mode::from_raw_mode(0o755))
                    .ctx("change mode of", &dir)?;
                rustix::fs::chown(
                    &dir,
                    Some(rustix::fs::Uid::ROOT),
                    Some(rustix::fs::Gid::ROOT),
                )
                .ctx("change owner of", &dir)?;
            }
        }
        let mut facts = BTreeMap::from([("dir".to_owned(), dir.display().to_string())]);
        if let Some((limit, q)) = quota {
            // The limit covers the whole copy: in vfs a layer holds its parent's data too.
            let projid = q.limit(&dir, limit)?;
            facts.insert("project_id".into(), projid.to_string());
        }
        Ok(facts)
    }

    fn destroy(&self, id: &LayerId) -> Result<()> {
        layer_mount::unmount_and_remove(&self.mount_point(id))?;
        tree::remove_via_trash(&self.dir(id), &self.home.join("trash"), id.as_str())
    }

    fn mount_point(&self, id: &LayerId) -> PathBuf {
        self.home.join("mnt").join(id.as_str())
    }

    fn mount(
        &self,
        id: &LayerId,
        _ancestors: &[LayerId],
        read_only: bool,
        _idmap: Option<&graphdriver_kit::idmap::UserNs>,
    ) -> Result<()> {
        layer_mount::bind(&self.dir(id), &self.mount_point(id), read_only)
    }

    fn unmount(&self, id: &LayerId) -> Result<()> {
        layer_mount::unmount_and_remove(&self.mount_point(id))
    }

    fn apply_target(&self, id: &LayerId, _ancestors: &[LayerId]) -> Result<ApplyTarget> {
        Ok(ApplyTarget {
            dir: self.dir(id),
            // inside the layer: in its xfs project when it has a size limit (renames into a
            // project from outside it fail with EXDEV); the name is reserved
            staging_parent: self.dir(id),
            lowers: Vec::new(),
            overlay_xattrs: Default::default(),
        })
    }

    fn tracks_stored_ids(&self) -> bool {
        true
    }

    fn stored_ids(&self) -> Result<Vec<LayerId>> {
        tree::layer_ids_in(&self.home.join("dir"), |_| true)
    }

    fn status(&self) -> Status {
        let fs = BackingFs::of(&self.home.join("dir"));
        vec![
            (
                "Backing Filesystem".into(),
                fs.map(|f| f.name().to_owned())
                    .unwrap_or_else(|e| e.to_string()),
            ),
            (
                "Copy".into(),
                "reflink, then copy_file_range, then read/write".into(),
            ),
            ("Native Diff".into(), "false (naive walk)".into()),
            (
                "Size Limits".into(),
                match &self.quota {
                    Ok(_) => "xfs project quota".into(),
                    Err(reason) => format!("unsupported: {reason}"),
                },
            ),
        ]
    }
}
