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
//! Changes and diffs are the shared [`NaiveDiff`](graphdriver_api::NaiveDiff).

mod copy;

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use graphdriver_api::archive::ApplyTarget;
use graphdriver_api::quota::ProjectQuota;
use graphdriver_api::store::{Backend, LayerStore};
use graphdriver_api::{
    tree, BackingFs, CreateOpts, DriverError, IoContext, LayerId, Result, Status,
};
use rustix::mount::{self as rmount, MountFlags, MountPropagationFlags, UnmountFlags};

pub use copy::{copy_tree, CopyStats};

/// The vfs driver: the shared layer store over [`Vfs`].
pub type VfsDriver = LayerStore<Vfs>;

/// Opens (creating if needed) the vfs driver under `root` (its data goes in `<root>/vfs`).
/// vfs takes no options; an unknown option is an error.
pub fn open(root: &Path, opts: &BTreeMap<String, String>) -> Result<VfsDriver> {
    if let Some(k) = opts.keys().next() {
        return Err(DriverError::Unsupported {
            driver: "vfs",
            reason: format!("unknown option {k}"),
        });
    }
    // canonical, so mount points compare equal to what /proc/self/mountinfo lists
    std::fs::create_dir_all(root).ctx("create directory", root)?;
    let root = &root.canonicalize().ctx("resolve", root)?;
    let home = root.join("vfs");
    for d in ["dir", "mnt", "trash"] {
        let p = home.join(d);
        std::fs::create_dir_all(&p).ctx("create directory", &p)?;
    }
    let trash = home.join("trash");
    for ent in std::fs::read_dir(&trash).ctx("read directory", &trash)? {
        tree::remove_tree(&ent.ctx("read directory", &trash)?.path())?;
    }
    let quota = ProjectQuota::probe(&home.join("dir"), home.join("quota-projid"))?;
    LayerStore::open(
        &home,
        Vfs {
            home: home.clone(),
            quota,
        },
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
        let quota = match (opts.size_limit, &self.quota) {
            (None, _) => None,
            (Some(limit), Ok(q)) => Some((limit, q)),
            (Some(_), Err(reason)) => {
                return Err(DriverError::Unsupported {
                    driver: "vfs",
                    reason: reason.clone(),
                })
            }
        };
        if let Some(k) = opts.storage_opts.keys().next() {
            return Err(DriverError::Unsupported {
                driver: "vfs",
                reason: format!("unknown storage option {k}"),
            });
        }
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
        let mnt = self.mount_point(id);
        let _ = rmount::unmount(&mnt, UnmountFlags::DETACH);
        match std::fs::remove_dir(&mnt) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("remove mount point", &mnt),
        }
        let dir = self.dir(id);
        // Rename first, so a crash never leaves a half-deleted tree under the layer's name.
        let doomed = tree::unique_dir(&self.home.join("trash"), id.as_str())?;
        match std::fs::rename(&dir, &doomed) {
            Ok(()) => tree::remove_tree(&doomed),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => tree::remove_tree(&doomed),
            Err(e) => Err(e).ctx("move to trash", &dir),
        }
    }

    fn mount_point(&self, id: &LayerId) -> PathBuf {
        self.home.join("mnt").join(id.as_str())
    }

    fn mount(
        &self,
        id: &LayerId,
        _ancestors: &[LayerId],
        read_only: bool,
        _mount_label: Option<&str>,
    ) -> Result<()> {
        let mnt = self.mount_point(id);
        match std::fs::create_dir(&mnt) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).ctx("create mount point", &mnt),
        }
        let dir = self.dir(id);
        rmount::mount_bind(&dir, &mnt).ctx("bind mount layer at", &mnt)?;
        let finish = (|| {
            // Private: the mount must not propagate into other namespaces.
            rmount::mount_change(&mnt, MountPropagationFlags::PRIVATE)?;
            if read_only {
                rmount::mount_remount(&mnt, MountFlags::BIND | MountFlags::RDONLY, "")?;
            }
            Ok::<_, rustix::io::Errno>(())
        })();
        if let Err(e) = finish {
            let _ = rmount::unmount(&mnt, UnmountFlags::DETACH);
            return Err(e).ctx("set up mount at", &mnt);
        }
        Ok(())
    }

    fn unmount(&self, id: &LayerId) -> Result<()> {
        let mnt = self.mount_point(id);
        match rmount::unmount(&mnt, UnmountFlags::DETACH) {
            Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e).ctx("unmount", &mnt),
        }
    }

    fn apply_target(&self, id: &LayerId, _ancestors: &[LayerId]) -> Result<ApplyTarget> {
        Ok(ApplyTarget {
            dir: self.dir(id),
            // inside the layer: in its xfs project when it has a size limit (renames into a
            // project from outside it fail with EXDEV); the name is reserved
            staging_parent: self.dir(id),
            lowers: Vec::new(),
        })
    }

    fn stored_ids(&self) -> Result<Vec<LayerId>> {
        let dir = self.home.join("dir");
        let mut out = Vec::new();
        for ent in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
            let ent = ent.ctx("read directory", &dir)?;
            if let Some(id) = ent.file_name().to_str().and_then(|n| LayerId::new(n).ok()) {
                out.push(id);
            }
        }
        Ok(out)
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
