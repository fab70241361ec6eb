//! The btrfs graph driver: every layer is a subvolume, and a child is a writable snapshot of
//! its parent, made in constant time whatever the parent holds.
//!
//! Layout: `<root>/btrfs/subvolumes/<id>` (the layer), `<root>/btrfs/mnt/<id>` (its mount
//! point: a bind mount, read-only while the layer has children). A layer that gets a child
//! is also marked read-only on disk (the subvolume's read-only property), so nothing writes
//! under a snapshot's feet; the mark is lifted when the layer is next mounted or applied to
//! without children.
//!
//! Subvolumes are created, snapshotted, deleted and limited with ioctls (`sys.rs`), not with
//! libbtrfsutil: nothing to build against, nothing a kernel since 4.x lacks. `remove` also
//! deletes subvolumes a container created inside its layer (btrfs refuses to delete a
//! subvolume that holds others). Size limits are qgroup limits on the bytes only the layer
//! holds (quota is turned on when the first limit is asked for); writes past them fail with
//! `EDQUOT`.
//!
//! Change lists are native: the tree search ioctl finds the inodes written since the
//! snapshot (by transaction id, skipping every leaf still shared with the parent), their
//! paths come from `INO_PATHS`, and the shared comparison runs on those paths only, so it
//! gives exactly the naive walk's answers at the cost of what changed. Diffs read the
//! subvolume directly, without a mount. The naive walk remains for a diff against another
//! layer than the parent.
//!
//! For tests and demos, `--opt btrfs.loopback=SIZE` makes (once) a loop-backed btrfs image at
//! `<root>/btrfs.img` mounted at `<root>/btrfs`, so a stock machine can run it.

mod sys;

use std::collections::{BTreeMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use graphdriver_api::{Change, CreateOpts, DriverError, IoContext, LayerId, Result, Status};
use graphdriver_kit::archive::ApplyTarget;
use graphdriver_kit::fs::mountinfo::MountTable;
use graphdriver_kit::options::{DriverOptions, OptionParser, StoreOptions};
use graphdriver_kit::store::{Backend, LayerStore};
use graphdriver_kit::{fs::layer_mount, fs::tree, fs::BackingFs, NaiveDiff};

/// The btrfs driver: the shared layer store over [`Btrfs`].
pub type BtrfsDriver = LayerStore<Btrfs>;

/// The name errors give this driver.
const DRIVER: &str = "btrfs";

/// btrfs's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BtrfsOptions {
    /// `btrfs.loopback=SIZE` (`8G`): where `<root>/btrfs` is not on btrfs, make it so with a
    /// loop-mounted image of this many bytes at `<root>/btrfs.img` (for tests and demos).
    pub loopback: Option<u64>,
    /// The layer store's (`store.*`, see [`graphdriver_kit::options`]).
    pub store: StoreOptions,
}

impl DriverOptions for BtrfsOptions {
    const DRIVER: &'static str = DRIVER;

    fn set(&mut self, p: &OptionParser<'_>, key: &str, value: &str) -> Result<bool> {
        match key {
            "btrfs.loopback" => self.loopback = Some(p.size(key, value)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn store_mut(&mut self) -> &mut StoreOptions {
        &mut self.store
    }
}

graphdriver_kit::driver_options!(BtrfsOptions);

/// Opens (creating if needed) the btrfs driver under `root`; `<root>/btrfs` must be on
/// btrfs, or `btrfs.loopback=SIZE` (e.g. `8G`) makes it so with a loop-backed image (see
/// [`BtrfsOptions`]).
pub fn open(root: &Path, opts: &BTreeMap<String, String>) -> Result<BtrfsDriver> {
    open_with(root, &BtrfsOptions::try_from(opts)?)
}

/// [`open`] with typed options.
pub fn open_with(root: &Path, opts: &BtrfsOptions) -> Result<BtrfsDriver> {
    // canonical, so mount points compare equal to what /proc/self/mountinfo lists
    std::fs::create_dir_all(root).ctx("create directory", root)?;
    let root = &root.canonicalize().ctx("resolve", root)?;
    let home = root.join("btrfs");
    std::fs::create_dir_all(&home).ctx("create directory", &home)?;
    if let Some(bytes) = opts.loopback {
        loopback(root, &home, bytes)?;
    }
    let fs = BackingFs::of(&home)?;
    if !fs.is_btrfs() {
        return Err(DriverError::unsupported(DRIVER, format!(
            "{} is on {}, not btrfs: put the root on btrfs, or pass --opt btrfs.loopback=SIZE for a loop-backed one",
            home.display(),
            fs.name()
        )));
    }
    for d in ["subvolumes", "mnt"] {
        let p = home.join(d);
        std::fs::create_dir_all(&p).ctx("create directory", &p)?;
    }
    let subvols = home.join("subvolumes");
    let quota_on = quota_enabled(&subvols);
    LayerStore::open_with(
        &home,
        Btrfs {
            home: home.clone(),
            subvols,
            quota_on: AtomicBool::new(quota_on),
        },
        opts.store.clone(),
    )
}

/// Makes `home` a loop-mounted btrfs image of `bytes` (once; an existing mount is kept).
fn loopback(root: &Path, home: &Path, bytes: u64) -> Result<()> {
    if BackingFs::of(home)?.is_btrfs() {
        return Ok(());
    }
    let image = root.join("btrfs.img");
    if !image.exists() {
        let f = std::fs::File::create(&image).ctx("create", &image)?;
        f.set_len(bytes).ctx("size", &image)?;
        run(std::process::Command::new("mkfs.btrfs")
            .args(["-q", "-f"])
            .arg(&image))?;
    }
    run(std::process::Command::new("mount")
        .args(["-t", "btrfs", "-o", "loop"])
        .arg(&image)
        .arg(home))
}

fn run(cmd: &mut std::process::Command) -> Result<()> {
    let out = cmd.output().map_err(|e| {
        DriverError::unsupported(
            DRIVER,
            format!("cannot run {cmd:?}: {e} (install btrfs-progs)"),
        )
    })?;
    if !out.status.success() {
        return Err(DriverError::unsupported(
            DRIVER,
            format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// Whether quota (qgroups) is on: btrfs lists qgroups in sysfs only then.
fn quota_enabled(dir: &Path) -> bool {
    fsid(dir).is_some_and(|id| Path::new(&format!("/sys/fs/btrfs/{id}/qgroups")).exists())
}

fn fsid(dir: &Path) -> Option<String> {
    let fd = tree::open_dir(dir).ok()?;
    let id = sys::fs_info_fsid(fd.as_fd()).ok()?;
    let h: String = id.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// The btrfs backend.
#[derive(Debug)]
pub struct Btrfs {
    home: PathBuf,
    subvols: PathBuf,
    quota_on: AtomicBool,
}

impl Btrfs {
    fn subvol(&self, id: &LayerId) -> PathBuf {
        self.subvols.join(id.as_str())
    }

    fn open_subvol(&self, id: &LayerId) -> Result<OwnedFd> {
        tree::open_dir(&self.subvol(id))
    }

    fn set_read_only(&self, id: &LayerId, read_only: bool) -> Result<()> {
        let fd = self.open_subvol(id)?;
        let flags = sys::subvol_getflags(fd.as_fd()).ctx("read flags of", self.subvol(id))?;
        let want = if read_only {
            flags | sys::SUBVOL_RDONLY
        } else {
            flags & !sys::SUBVOL_RDONLY
        };
        if want != flags {
            sys::subvol_setflags(fd.as_fd(), want).ctx("set read-only flag of", self.subvol(id))?;
        }
        Ok(())
    }

    /// The changes of `id` against `parent`, from what btrfs knows: every inode written after
    /// the snapshot was taken has a later transaction id, and the tree search ioctl finds
    /// them without reading the unchanged parts of the tree (leaves shared with the parent
    /// are older). The naive comparison then runs on those paths and their directories only.
    fn changed_since_snapshot(&self, id: &LayerId, parent: &LayerId) -> Result<Vec<Change>> {
        let path = self.subvol(id);
        let fd = self.open_subvol(id)?;
        let otransid =
            sys::get_subvol_info_otransid(fd.as_fd()).ctx("read subvolume info of", &path)?;
        // Inode updates wait in memory (delayed items) until a transaction commits: commit,
        // so the tree holds every change made so far.
        rustix::fs::syncfs(&fd).ctx("commit the filesystem of", &path)?;
        let items = sys::tree_search_v2(
            fd.as_fd(),
            sys::SUBVOL_ROOT_INO,
            sys::INODE_ITEM_KEY,
            sys::INODE_ITEM_KEY,
            otransid + 1,
        )
        .ctx("search the tree of", &path)?;
        let mut may_differ: HashSet<Vec<u8>> = HashSet::new();
        for it in items {
            // struct btrfs_inode_item: generation, then transid (the last change)
            let transid = it
                .data
                .get(8..16)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(u64::MAX);
            if transid <= otransid {
                continue;
            }
            if it.objectid == sys::SUBVOL_ROOT_INO {
                may_differ.insert(Vec::new());
                continue;
            }
            let paths = match sys::ino_paths(fd.as_fd(), it.objectid) {
                Ok(p) => p,
                // deleted in a transaction not yet committed: its directory shows it
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                // a path longer than the kernel hands out (4 KiB): compare the whole trees
                Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                    return NaiveDiff::changes(&path, &self.subvol(parent));
                }
                Err(e) => return Err(e).ctx("find the paths of an inode in", &path),
            };
            for p in paths {
                let mut p: &[u8] = &p;
                loop {
                    if !may_differ.insert(p.to_vec()) {
                        break; // its ancestors are in already
                    }
                    match p.iter().rposition(|&b| b == b'/') {
                        Some(i) => p = &p[..i],
                        None => {
                            may_differ.insert(Vec::new());
                            break;
                        }
                    }
                }
            }
        }
        NaiveDiff::changes_within(&path, &self.subvol(parent), &may_differ)
    }

    /// Bytes only this layer holds, from its qgroup, when quota is on.
    pub fn usage(&self, id: &LayerId) -> Result<Option<u64>> {
        if !self.quota_on.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let fd = self.open_subvol(id)?;
        let sub =
            sys::ino_lookup_tree_id(fd.as_fd()).ctx("look up subvolume id of", self.subvol(id))?;
        let Some(fsid) = fsid(&self.subvols) else {
            return Ok(None);
        };
        let p = PathBuf::from(format!("/sys/fs/btrfs/{fsid}/qgroups/0_{sub}/exclusive"));
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(s.trim().parse().ok()),
            Err(_) => Ok(None),
        }
    }

    /// Deletes subvolume `name` of `dir`, and first every subvolume created inside it.
    fn delete_subvolume(&self, dir: &Path, name: &std::ffi::CStr) -> Result<()> {
        let dfd = tree::open_dir(dir)?;
        let path = dir.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        match sys::snap_destroy(dfd.as_fd(), name) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
            // not a subvolume (a half-made layer): a plain directory
            Err(e)
                if e.raw_os_error() == Some(libc::EINVAL)
                    || e.raw_os_error() == Some(libc::ENOTTY) =>
            {
                return tree::remove_tree(&path)
            }
            Err(e) => return Err(e).ctx("delete subvolume", &path),
        }
        // It holds other subvolumes: delete those first, deepest first.
        for nested in nested_subvolumes(&path)?.iter().rev() {
            let (Some(parent), Some(n)) = (nested.parent(), nested.file_name()) else {
                continue;
            };
            let n = CString::new(n.as_bytes())
                .map_err(|_| DriverError::unsupported(DRIVER, "NUL in a subvolume name"))?;
            self.delete_subvolume(parent, &n)?;
        }
        sys::snap_destroy(dfd.as_fd(), name).ctx("delete subvolume", &path)
    }
}

/// Subvolumes below `root` (not `root` itself), parents before children.
fn nested_subvolumes(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for ent in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
            let ent = ent.ctx("read directory", &dir)?;
            let ft = ent.file_type().ctx("stat", ent.path())?;
            if !ft.is_dir() {
                continue;
            }
            let md = std::fs::symlink_metadata(ent.path()).ctx("stat", ent.path())?;
            if std::os::unix::fs::MetadataExt::ino(&md) == sys::SUBVOL_ROOT_INO {
                out.push(ent.path());
            }
            stack.push(ent.path());
        }
    }
    Ok(out)
}

impl Backend for Btrfs {
    fn name(&self) -> &'static str {
        "btrfs"
    }

    /// The qgroup's exclusive bytes, when quotas are on and the layer has no children (a
    /// child's snapshot shares the parent's extents, so they are no longer exclusive to it),
    /// after a sync commits the transaction that accounts the latest writes.
    fn disk_usage(&self, id: &LayerId, has_children: bool) -> Result<Option<u64>> {
        if has_children || !self.quota_on.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let fd = self.open_subvol(id)?;
        rustix::fs::syncfs(&fd).ctx("sync the filesystem of", self.subvol(id))?;
        self.usage(id)
    }

    fn make(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<BTreeMap<String, String>> {
        let dir = tree::open_dir(&self.subvols)?;
        let name = CString::new(id.as_str())
            .map_err(|_| DriverError::unsupported(DRIVER, "NUL in an id"))?;
        let path = self.subvol(id);
        match parent {
            Some(p) => {
                let src = self.open_subvol(p)?;
                sys::snap_create_v2(dir.as_fd(), src.as_fd(), &name, 0)
                    .ctx("snapshot parent as", &path)?;
                // the parent is frozen while it has children
                self.set_read_only(p, true)?;
                // a snapshot of a read-only subvolume may come out read-only: this one writes
                self.set_read_only(id, false)?;
            }
            None => {
                sys::subvol_create(dir.as_fd(), &name).ctx("create subvolume", &path)?;
                rustix::fs::chmod(&path, rustix::fs::Mode::from_raw_mode(0o755))
                    .ctx("change mode of", &path)?;
                rustix::fs::chown(
                    &path,
                    Some(rustix::fs::Uid::ROOT),
                    Some(rustix::fs::Gid::ROOT),
                )
                .ctx("change owner of", &path)?;
            }
        }
        let fd = self.open_subvol(id)?;
        let sub = sys::ino_lookup_tree_id(fd.as_fd()).ctx("look up subvolume id of", &path)?;
        if let Some(limit) = opts.size_limit {
            if !self.quota_on.load(Ordering::Relaxed) {
                match sys::quota_ctl(dir.as_fd(), sys::QUOTA_CTL_ENABLE) {
                    Ok(()) => {}
                    Err(e) => {
                        return Err(e).ctx("turn on btrfs quota (qgroups) for", &self.subvols)
                    }
                }
                self.quota_on.store(true, Ordering::Relaxed);
            }
            sys::qgroup_limit(fd.as_fd(), sys::QGROUP_LIMIT_MAX_EXCL, limit)
                .ctx("limit the qgroup of", &path)?;
        }
        Ok(BTreeMap::from([
            ("subvolume".to_owned(), path.display().to_string()),
            ("subvolume_id".to_owned(), sub.to_string()),
        ]))
    }

    fn destroy(&self, id: &LayerId) -> Result<()> {
        layer_mount::unmount_and_remove(&self.mount_point(id))?;
        let name = CString::new(id.as_str())
            .map_err(|_| DriverError::unsupported(DRIVER, "NUL in an id"))?;
        self.delete_subvolume(&self.subvols, &name)
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
        self.set_read_only(id, read_only)?;
        layer_mount::bind(&self.subvol(id), &self.mount_point(id), read_only)
    }

    fn unmount(&self, id: &LayerId) -> Result<()> {
        layer_mount::unmount_and_remove(&self.mount_point(id))
    }

    fn is_mounted(&self, id: &LayerId, mounts: &MountTable) -> bool {
        mounts.contains(&self.mount_point(id))
    }

    fn apply_target(&self, id: &LayerId, _ancestors: &[LayerId]) -> Result<ApplyTarget> {
        // no children (the store checked): writable again if a removed child froze it
        self.set_read_only(id, false)?;
        // renames cannot leave a subvolume: stage inside it (the name is reserved)
        Ok(ApplyTarget {
            dir: self.subvol(id),
            staging_parent: self.subvol(id),
            lowers: Vec::new(),
            overlay_xattrs: Default::default(),
        })
    }

    fn native_changes(
        &self,
        _store: &LayerStore<Self>,
        id: &LayerId,
        parent: &LayerId,
    ) -> Option<Result<Vec<Change>>> {
        Some(self.changed_since_snapshot(id, parent))
    }

    fn tracks_stored_ids(&self) -> bool {
        true
    }

    fn stored_ids(&self) -> Result<Vec<LayerId>> {
        tree::layer_ids_in(&self.subvols, |_| true)
    }

    fn native_diff_root(&self, id: &LayerId) -> Option<PathBuf> {
        Some(self.subvol(id))
    }

    fn status(&self) -> Status {
        let device = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .filter_map(|l| {
                        let f: Vec<&str> = l.split(' ').collect();
                        let point = *f.get(4)?;
                        let sep = f.iter().position(|x| *x == "-")?;
                        let dev = f.get(sep + 2)?.to_string();
                        self.home.starts_with(point).then_some((point.len(), dev))
                    })
                    .max_by_key(|(len, _)| *len)
                    .map(|(_, dev)| dev)
            })
            .unwrap_or_else(|| "unknown".into());
        vec![
            ("Backing Filesystem".into(), "btrfs".into()),
            ("Backing Device".into(), device),
            (
                "Quota".into(),
                if self.quota_on.load(Ordering::Relaxed) {
                    "on (qgroups)"
                } else {
                    "off"
                }
                .into(),
            ),
            (
                "Native Diff".into(),
                "true (inodes changed since the snapshot, by generation)".into(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_once_and_refuse_what_btrfs_does_not_take() {
        let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let o = BtrfsOptions::try_from(&map(&[("btrfs.loopback", "8G")])).unwrap();
        assert_eq!(o.loopback, Some(8 << 30));
        assert!(o.store.native_diff);
        let o = BtrfsOptions::try_from(&map(&[("store.native_diff", "false")])).unwrap();
        assert_eq!(o.loopback, None);
        assert!(!o.store.native_diff);
        for bad in [("btrfs.loopback", "x"), ("btrfs.size", "8G")] {
            let e = BtrfsOptions::try_from(&map(&[bad])).unwrap_err();
            assert!(
                matches!(
                    e,
                    DriverError::Unsupported {
                        driver: "btrfs",
                        ..
                    }
                ),
                "{e}"
            );
        }
    }
}
