//! The zfs graph driver: every layer is a dataset `<fsname>/<id>`, and a child is a clone of
//! a snapshot of its parent, made in constant time whatever the parent holds.
//!
//! Datasets are made, snapshotted, cloned and destroyed through libzfs_core (one ioctl each,
//! no `zfs` process), and read or set through libzfs (properties, listing): `sys.rs`. Every
//! layer dataset has `mountpoint=legacy`, so ZFS never mounts it by itself; the driver mounts
//! it with `mount(2)` (type `zfs`) at `<root>/zfs/mnt/<id>` while it is in use or being
//! applied to. Layer datasets carry the user property `org.graphdriver:root` naming the driver
//! home that owns them, so two driver roots sharing one parent dataset never sweep each
//! other's layers.
//!
//! The parent dataset (`fsname`) is given with `--opt zfs.fsname=POOL/DATASET`, or is the
//! dataset mounted where the driver root is (as docker does). It must exist.
//!
//! - A child of `p` is `<fsname>/<child>`, a clone of the snapshot `<fsname>/<p>@gd:children`
//!   that all of `p`'s children share. The first child marks the parent `readonly=on` and
//!   then takes the snapshot; later ones only clone it, one transaction group each. The
//!   parent stays read-only while it has children (lifted when it is next mounted or applied
//!   to without children), so the snapshot is always what it holds.
//! - `remove` is one channel program (`programs/remove.lua`), so one transaction group: the
//!   clone, then its origin snapshot when no other clone is left on it. Nothing can be left
//!   half-removed by a crash, and no clone ever loses its origin. A snapshot a crash left
//!   between snapshot and clone is harmless (the next child uses it; a layer made writable
//!   again destroys it first) and is swept when a create is rolled back or replayed.
//! - Size limits are the `quota` property: what the layer itself holds (a clone's `used`
//!   counts only the blocks it does not share with its origin), so a limited container layer
//!   can hold that much whatever its image holds. (`refquota` would count the shared image
//!   blocks too.) Writes past it fail with `EDQUOT`.
//! - [`Zfs::usage`] is the layer's `used`: not counting the parent.
//!
//! Change lists and diffs use the shared naive walk over the mounted layers.

mod dataset_name;
mod error;
mod sys;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use graphdriver_api::{CreateOpts, DriverError, IoContext, LayerId, Result, Status};
use graphdriver_kit::archive::ApplyTarget;
use graphdriver_kit::fs::layer_mount;
use graphdriver_kit::fs::mountinfo::MountTable;
use graphdriver_kit::options::{DriverOptions, OptionParser, StoreOptions};
use graphdriver_kit::store::{Backend, LayerStore};
use rustix::mount::{self as rmount, MountFlags, MountPropagationFlags, UnmountFlags};

pub use dataset_name::DatasetName;
pub use error::ZfsError;

use error::{CoreContext, LibContext};
use sys::{Lib, LibZfs, NvList, Prop};

/// The zfs driver: the shared layer store over [`Zfs`].
pub type ZfsDriver = LayerStore<Zfs>;

/// The channel programs, run by [`Lib::channel_program`].
const REMOVE: &str = include_str!("programs/remove.lua");
const SWEEP: &str = include_str!("programs/sweep.lua");

/// The user property naming the driver home that owns a layer dataset.
pub const OWNER_PROPERTY: &str = "org.graphdriver:root";

/// The name errors give this driver.
const DRIVER: &str = "zfs";

/// zfs's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZfsOptions {
    /// `zfs.fsname=POOL/DATASET`: the dataset the layers go below (default: the dataset
    /// mounted where `<root>/zfs` is).
    pub fsname: Option<DatasetName>,
    /// The layer store's (`store.*`, see [`graphdriver_kit::options`]).
    pub store: StoreOptions,
}

impl DriverOptions for ZfsOptions {
    const DRIVER: &'static str = DRIVER;

    fn set(&mut self, p: &OptionParser<'_>, key: &str, value: &str) -> Result<bool> {
        match key {
            "zfs.fsname" => {
                let name = DatasetName::new(value)
                    .map_err(|e| p.unsupported(format!("zfs.fsname={value}: {e}")))?;
                self.fsname = Some(name);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn store_mut(&mut self) -> &mut StoreOptions {
        &mut self.store
    }
}

graphdriver_kit::driver_options!(ZfsOptions);

/// Opens (creating if needed) the zfs driver under `root`, with options as `key=value` (see
/// [`ZfsOptions`]). The layers go below the dataset `zfs.fsname=POOL/DATASET`, or below the
/// dataset mounted where `<root>/zfs` is.
pub fn open(root: &Path, opts: &BTreeMap<String, String>) -> Result<ZfsDriver> {
    open_with(root, &ZfsOptions::try_from(opts)?)
}

/// [`open`] with typed options.
pub fn open_with(root: &Path, opts: &ZfsOptions) -> Result<ZfsDriver> {
    // the libraries and the module first: a host without ZFS gets that answer, and nothing
    // is made under `root`
    let lib = Lib::load().map_err(|e| {
        DriverError::unsupported(DRIVER, format!(
            "{e} (ZFS is not installed: Debian's zfsutils-linux, from contrib, brings the libraries)"
        ))
    })?;
    lib.core_init().map_err(|e| {
        DriverError::unsupported(
            DRIVER,
            format!(
                "cannot open /dev/zfs ({e}): load the zfs module (Debian: zfs-dkms from contrib)"
            ),
        )
    })?;
    std::fs::create_dir_all(root).ctx("create directory", root)?;
    // canonical, so mount points compare equal to what /proc/self/mountinfo lists
    let root = &root.canonicalize().ctx("resolve", root)?;
    let home = root.join("zfs");
    std::fs::create_dir_all(&home).ctx("create directory", &home)?;
    let handle = LibZfs::init(lib)
        .map_err(|e| DriverError::unsupported(DRIVER, format!("libzfs_init failed: {e}")))?;
    let fsname = match opts.fsname.clone() {
        Some(f) => f,
        None => {
            let mounts = MountTable::read()?;
            match mounts.holding(&home) {
                Some(m) if m.fstype == "zfs" => DatasetName::new(&m.source).map_err(|e| {
                    DriverError::unsupported(DRIVER, format!("the dataset {} mounted at the root: {e}", m.source))
                })?,
                other => {
                    return Err(DriverError::unsupported(DRIVER, format!(
                        "{} is on {}, not a zfs dataset: put the root on one, or pass --opt zfs.fsname=POOL/DATASET",
                        home.display(),
                        other.map_or("nothing", |m| m.fstype.as_str())
                    )))
                }
            }
        }
    };
    if fsname.as_str().len() > dataset_name::MAX_FSNAME_LEN {
        return Err(DriverError::unsupported(DRIVER, format!(
            "the dataset name {fsname} is longer than {} bytes: a layer's snapshot name would exceed ZFS's limit",
            dataset_name::MAX_FSNAME_LEN
        )));
    }
    let props = Props::look_up(lib)?;
    let mnt = home.join("mnt");
    std::fs::create_dir_all(&mnt).ctx("create directory", &mnt)?;
    let backend = Zfs {
        owner: home.display().to_string(),
        home: home.clone(),
        mnt,
        fsname,
        zfs: lib,
        lib: Mutex::new(handle),
        props,
    };
    backend.dataset(&backend.fsname, |_| Ok(())).map_err(|e| {
        DriverError::unsupported(
            DRIVER,
            format!(
                "the dataset {} is not usable (create it with zfs create): {e}",
                backend.fsname
            ),
        )
    })?;
    LayerStore::open_with(&home, backend, opts.store.clone())
}

/// The numbers of the properties used, looked up by name (they move between releases).
#[derive(Debug, Clone, Copy)]
struct Props {
    used: Prop,
    referenced: Prop,
    readonly: Prop,
    compression: Prop,
    quota: Prop,
    pool_free: Prop,
    pool_size: Prop,
}

impl Props {
    fn look_up(lib: Lib) -> Result<Props> {
        let ds = |n: &str| {
            lib.dataset_prop(n).ok_or_else(|| {
                DriverError::unsupported(DRIVER, format!("libzfs lacks property {n}"))
            })
        };
        let pool = |n: &str| {
            lib.pool_prop(n).ok_or_else(|| {
                DriverError::unsupported(DRIVER, format!("libzfs lacks pool property {n}"))
            })
        };
        Ok(Props {
            used: ds("used")?,
            referenced: ds("referenced")?,
            readonly: ds("readonly")?,
            compression: ds("compression")?,
            quota: ds("quota")?,
            pool_free: pool("free")?,
            pool_size: pool("size")?,
        })
    }
}

/// The zfs backend.
#[derive(Debug)]
pub struct Zfs {
    home: PathBuf,
    /// `home` as text, the value of [`OWNER_PROPERTY`] on this driver's layers.
    owner: String,
    mnt: PathBuf,
    fsname: DatasetName,
    /// The loaded libraries.
    zfs: Lib,
    /// libzfs handles are not thread-safe.
    lib: Mutex<LibZfs>,
    props: Props,
}

/// What a layer's dataset holds, from its properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// `used`: the bytes only this layer holds (not those it shares with its parent).
    pub used: u64,
    /// `referenced`: every byte the layer's tree refers to, shared ones included.
    pub referenced: u64,
    /// `quota`, when one is set.
    pub quota: Option<u64>,
}

impl Zfs {
    /// The dataset layers are made below.
    pub fn fsname(&self) -> &DatasetName {
        &self.fsname
    }

    /// The dataset of layer `id`.
    pub fn layer_dataset(&self, id: &LayerId) -> DatasetName {
        self.fsname.layer(id)
    }

    fn lib(&self) -> MutexGuard<'_, LibZfs> {
        // a panic while holding the handle leaves nothing half-done in it
        self.lib.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the open dataset `name`.
    fn dataset<T>(
        &self,
        name: &DatasetName,
        f: impl FnOnce(&mut sys::Dataset<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut lib = self.lib();
        let mut ds = lib
            .open_fs(name.as_str())
            .lctx("open dataset", name.as_str())?;
        f(&mut ds)
    }

    /// Freezes `name` (`readonly=on`) before its first child's snapshot is taken.
    fn freeze(&self, name: &DatasetName) -> Result<()> {
        let p = self.props.readonly;
        self.dataset(name, |ds| {
            if ds.get_u64(p) == 0 {
                ds.set("readonly", "on")
                    .lctx("set readonly of", name.as_str())?;
            }
            Ok(())
        })
    }

    /// Makes `name`, which has no children, writable again. Its children's snapshot, which
    /// only a crash between snapshot and clone can have left, goes first: no later child may
    /// start from what the layer held before it was written to.
    fn thaw(&self, name: &DatasetName) -> Result<()> {
        let p = self.props.readonly;
        self.dataset(name, |ds| {
            if ds.get_u64(p) == 0 {
                return Ok(());
            }
            let snap = name.children_snapshot();
            match self.zfs.lzc_destroy_one(&snap) {
                Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                    return Err(e).zctx("destroy snapshot", &snap)?
                }
                _ => {}
            }
            ds.set("readonly", "off")
                .lctx("set readonly of", name.as_str())?;
            Ok(())
        })
    }

    /// Runs the channel program `text` with `args`, for `op` on `name`; `Ok(None)` when it
    /// returned "", or the errno and dataset of the step that failed.
    fn program(
        &self,
        op: &'static str,
        name: &str,
        text: &str,
        args: &NvList,
    ) -> Result<Option<(i32, String)>> {
        let out = self
            .zfs
            .channel_program(self.fsname.pool(), text, args)
            .map_err(|f| ZfsError::Program {
                op,
                name: name.to_owned(),
                message: f.message,
                source: f.errno,
            })?;
        let out = out.unwrap_or_default();
        if out.is_empty() {
            return Ok(None);
        }
        let parsed = out
            .split_once(' ')
            .and_then(|(e, n)| Some((e.parse::<i32>().ok()?, n.to_owned())));
        match parsed {
            Some(failed) => Ok(Some(failed)),
            None => Err(ZfsError::Program {
                op,
                name: name.to_owned(),
                message: Some(format!("unexpected result {out:?}")),
                source: std::io::Error::from_raw_os_error(libc::EPROTO),
            }
            .into()),
        }
    }

    /// What layer `id` holds, after waiting for the pool's writes to be accounted.
    pub fn usage(&self, id: &LayerId) -> Result<Usage> {
        let name = self.layer_dataset(id);
        self.zfs
            .lzc_sync_pool(self.fsname.pool())
            .zctx("sync pool", self.fsname.pool())?;
        let p = self.props;
        self.dataset(&name, |ds| {
            let quota = ds.get_u64(p.quota);
            Ok(Usage {
                used: ds.get_u64(p.used),
                referenced: ds.get_u64(p.referenced),
                quota: (quota != 0).then_some(quota),
            })
        })
    }

    /// Mounts the dataset of `id` at its mount point (made if missing; anything mounted there
    /// before is detached first), private, and read-only when asked.
    fn mount_dataset(&self, id: &LayerId, read_only: bool) -> Result<()> {
        let name = self.layer_dataset(id);
        // a layer without children may write again
        let frozen = if read_only {
            self.dataset(&name, |ds| Ok(ds.get_u64(self.props.readonly) != 0))?
        } else {
            self.thaw(&name)?;
            false
        };
        let mnt = self.mount_point(id);
        layer_mount::make_mount_point(&mnt)?;
        if is_mount_point(&mnt)? {
            let _ = rmount::unmount(&mnt, UnmountFlags::DETACH);
        }
        // the flags must match the dataset's: an active superblock refuses a mount that
        // differs from it in read-only
        let flags = if frozen {
            MountFlags::RDONLY
        } else {
            MountFlags::empty()
        };
        rmount::mount(name.as_str(), &mnt, "zfs", flags, None)
            .map_err(std::io::Error::from)
            .zctx("mount", name.as_str())?;
        let finish = (|| {
            rmount::mount_change(&mnt, MountPropagationFlags::PRIVATE)?;
            if read_only && !frozen {
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

    /// Destroys the snapshots a crash left on this driver's layers (`programs/sweep.lua`):
    /// children's snapshots without clones, and origins an earlier version named after
    /// `id`. Only needed when `id`'s dataset is gone (a create rolled back or replayed), so
    /// rarely; the store lock is held, so no create is between snapshot and clone.
    fn sweep_strays(&self, id: &LayerId) -> Result<()> {
        let [tag1, tag2] = dataset_name::snapshot_tags(id);
        let mut args = NvList::new(self.zfs);
        let nv = |r: std::io::Result<()>| {
            r.zctx("build the arguments of a sweep of", self.fsname.as_str())
        };
        nv(args.add_string("fsname", self.fsname.as_str()))?;
        nv(args.add_string("property", OWNER_PROPERTY))?;
        nv(args.add_string("owner", &self.owner))?;
        nv(args.add_string("children", dataset_name::CHILDREN_TAG))?;
        nv(args.add_string("tag1", &tag1))?;
        nv(args.add_string("tag2", &tag2))?;
        match self.program("sweep snapshots below", self.fsname.as_str(), SWEEP, &args)? {
            None => Ok(()),
            Some((errno, snap)) => {
                Err(std::io::Error::from_raw_os_error(errno)).zctx("destroy snapshot", &snap)?
            }
        }
    }

    /// The layers below `fsname` that this driver home owns.
    fn owned_layers(&self) -> Result<Vec<LayerId>> {
        let children = self.dataset(&self.fsname, |ds| {
            Ok(ds
                .children_with(OWNER_PROPERTY)
                .lctx("list datasets below", self.fsname.as_str())?)
        })?;
        Ok(children
            .into_iter()
            .filter(|(_, owner)| owner.as_deref() == Some(self.owner.as_str()))
            .filter_map(|(name, _)| self.fsname.layer_of(&name))
            .collect())
    }
}

/// Destroys snapshot `snap`; one that still has a clone (which cannot happen through the
/// store's rules) is destroyed by ZFS when its last clone goes.
fn destroy_snapshot(zfs: Lib, snap: &str) -> Result<()> {
    match zfs.lzc_destroy_one(snap) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::EBUSY)) => Ok(zfs
            .lzc_destroy_snap_deferred(snap)
            .zctx("destroy (deferred) snapshot", snap)?),
        Err(e) => Err(e).zctx("destroy snapshot", snap)?,
    }
}

impl Zfs {
    /// The error of a create or clone of `name` that failed with `e`. Roots that share a
    /// dataset share the names below it: when the name is taken (EEXIST) by a layer of
    /// another home, [`ZfsError::Taken`] names that home (its dataset is never touched:
    /// `destroy` checks the owner too); otherwise `op` on `what` failed.
    fn taken_or(
        &self,
        name: &DatasetName,
        e: std::io::Error,
        op: &'static str,
        what: String,
    ) -> DriverError {
        if e.raw_os_error() == Some(libc::EEXIST) {
            let owner = self
                .dataset(name, |ds| Ok(ds.user_prop(OWNER_PROPERTY)))
                .ok()
                .flatten();
            if owner.as_deref() != Some(self.owner.as_str()) {
                return ZfsError::Taken {
                    name: name.to_string(),
                    owner,
                }
                .into();
            }
        }
        ZfsError::Core {
            op,
            name: what,
            source: e,
        }
        .into()
    }
}

/// Whether `path` is a mount point: it is on another device than its parent directory.
fn is_mount_point(path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let Some(parent) = path.parent() else {
        return Ok(true);
    };
    let a = std::fs::symlink_metadata(path).ctx("stat", path)?;
    let b = std::fs::symlink_metadata(parent).ctx("stat", parent)?;
    Ok(a.dev() != b.dev())
}

impl Backend for Zfs {
    fn name(&self) -> &'static str {
        "zfs"
    }

    /// The dataset's `used`, after the pool's pending writes are accounted.
    fn disk_usage(&self, id: &LayerId, _has_children: bool) -> Result<Option<u64>> {
        self.usage(id).map(|u| Some(u.used))
    }

    fn make(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<BTreeMap<String, String>> {
        let name = self.layer_dataset(id);
        let mut props = NvList::new(self.zfs);
        let nv = |r: std::io::Result<()>| r.zctx("build the properties of", name.as_str());
        nv(props.add_string("mountpoint", "legacy"))?;
        nv(props.add_string(OWNER_PROPERTY, &self.owner))?;
        if let Some(limit) = opts.size_limit {
            nv(props.add_u64("quota", limit))?;
        }
        match parent {
            None => {
                if let Err(e) = self.zfs.lzc_create_fs(name.as_str(), &props) {
                    return Err(self.taken_or(&name, e, "create dataset", name.to_string()));
                }
            }
            Some(p) => {
                let parent = self.layer_dataset(p);
                let origin = parent.children_snapshot();
                // the parent's first child: freeze it, then snapshot what it holds
                let first = !self.zfs.lzc_exists_ds(&origin);
                if first {
                    self.freeze(&parent)?;
                    self.zfs
                        .lzc_snapshot_one(&origin)
                        .zctx("snapshot", &origin)?;
                }
                if let Err(e) = self.zfs.lzc_clone_fs(name.as_str(), &origin, &props) {
                    let error = self.taken_or(&name, e, "clone", origin.clone());
                    let rollback = if first {
                        destroy_snapshot(self.zfs, &origin)
                    } else {
                        Ok(())
                    };
                    return match rollback {
                        Ok(()) => Err(error),
                        Err(rb) => Err(DriverError::RollbackFailed {
                            error: Box::new(error),
                            rollback: Box::new(rb),
                        }),
                    };
                }
            }
        }
        Ok(BTreeMap::from([("dataset".to_owned(), name.to_string())]))
    }

    fn destroy(&self, id: &LayerId) -> Result<()> {
        layer_mount::unmount_and_remove(&self.mount_point(id))?;
        let name = self.layer_dataset(id);
        let mut args = NvList::new(self.zfs);
        let nv =
            |r: std::io::Result<()>| r.zctx("build the arguments of a destroy of", name.as_str());
        nv(args.add_string("dataset", name.as_str()))?;
        nv(args.add_string("scope", &format!("{}/", self.fsname)))?;
        nv(args.add_string("property", OWNER_PROPERTY))?;
        nv(args.add_string("owner", &self.owner))?;
        match self.program("destroy", name.as_str(), REMOVE, &args)? {
            None => Ok(()),
            // another home's layer of the same id (two roots on one dataset): this home has
            // nothing there to destroy (the rollback of a create that `make` refused)
            Some((libc::ENOTUNIQ, theirs)) if theirs == name.as_str() => Ok(()),
            Some((libc::ENOENT, gone)) if gone == name.as_str() => self.sweep_strays(id),
            Some((libc::EBUSY, busy)) if busy == name.as_str() => Err(DriverError::Busy {
                id: id.clone(),
                reason: format!(
                    "dataset {name} is still mounted (a mount held in another mount namespace?)"
                ),
            }),
            Some((errno, what)) => {
                Err(std::io::Error::from_raw_os_error(errno)).zctx("destroy", &what)?
            }
        }
    }

    fn mount_point(&self, id: &LayerId) -> PathBuf {
        self.mnt.join(id.as_str())
    }

    fn mount(
        &self,
        id: &LayerId,
        _ancestors: &[LayerId],
        read_only: bool,
        _idmap: Option<&graphdriver_kit::idmap::UserNs>,
    ) -> Result<()> {
        self.mount_dataset(id, read_only)
    }

    fn unmount(&self, id: &LayerId) -> Result<()> {
        layer_mount::unmount_and_remove(&self.mount_point(id))
    }

    fn is_mounted(&self, id: &LayerId, mounts: &MountTable) -> bool {
        mounts.contains(&self.mount_point(id))
    }

    fn apply_target(&self, id: &LayerId, _ancestors: &[LayerId]) -> Result<ApplyTarget> {
        // no children (the store checked): writable
        self.mount_dataset(id, false)?;
        let dir = self.mount_point(id);
        // renames cannot leave the dataset: stage inside it (the name is reserved)
        Ok(ApplyTarget {
            staging_parent: dir.clone(),
            dir,
            lowers: Vec::new(),
            overlay_xattrs: Default::default(),
        })
    }

    fn apply_finished(&self, id: &LayerId) -> Result<()> {
        self.unmount(id)
    }

    fn tracks_stored_ids(&self) -> bool {
        true
    }

    fn stored_ids(&self) -> Result<Vec<LayerId>> {
        self.owned_layers()
    }

    fn status(&self) -> Status {
        let p = self.props;
        let pool = self.fsname.pool().to_owned();
        let compression = self
            .dataset(&self.fsname, |ds| Ok(ds.get_string(p.compression)))
            .ok()
            .flatten()
            .unwrap_or_else(|| "unknown".into());
        let (free, size) = {
            let mut lib = self.lib();
            (
                lib.pool_prop_u64(&pool, p.pool_free),
                lib.pool_prop_u64(&pool, p.pool_size),
            )
        };
        let show =
            |r: std::result::Result<u64, String>| r.map(|v| v.to_string()).unwrap_or_else(|e| e);
        vec![
            ("Backing Filesystem".into(), "zfs".into()),
            ("Zpool".into(), pool),
            ("Parent Dataset".into(), self.fsname.to_string()),
            ("Compression".into(), compression),
            ("Zpool Free".into(), show(free)),
            ("Zpool Size".into(), show(size)),
            ("Mounts".into(), self.home.join("mnt").display().to_string()),
            (
                "Native Diff".into(),
                "false (naive walk of the mounted layers)".into(),
            ),
        ]
    }
}
