//! The `GraphDriver` trait and the values that cross it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{LayerId, Result};

/// Options for [`GraphDriver::create`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOpts {
    /// A writable container layer (`true`) or an image layer (`false`). Both can be written
    /// while they have no children; the kind is recorded for `status` and for backends that
    /// treat the two differently.
    pub read_write: bool,
    /// A hard limit on the bytes the layer itself may hold (not counting its parent), if the
    /// backend supports one; otherwise `create` fails with `Unsupported`.
    pub size_limit: Option<u64>,
    /// A mount label (SELinux context) for the layer's mounts. No backend applies one yet:
    /// `create` (and [`GraphDriver::get`]) with a non-empty label fail with `Unsupported`
    /// and change nothing, rather than mount the layer unlabelled. `None` or empty: no label.
    pub mount_label: Option<String>,
    /// Backend-specific `key=value` options.
    pub storage_opts: BTreeMap<String, String>,
}

/// Options for [`GraphDriver::get`]: how the mount shows the layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOpts {
    /// A mount label, refused as [`CreateOpts::mount_label`] is. `None` or empty: no label.
    pub mount_label: Option<String>,
    /// Show the layer through a user namespace's id map (an idmapped mount): files stored as
    /// uid 0 appear as the map's host id for 0, so a container running with that map owns
    /// its image, and what it writes is stored with unmapped ids (its `changes` and `diff`
    /// say uid 0). Nothing is copied or chowned: layers are shared by every map. `None`: the
    /// ids as stored.
    pub id_map: Option<crate::idmap::IdMap>,
}

impl MountOpts {
    /// Options that show the layer through `map`.
    pub fn mapped(map: crate::idmap::IdMap) -> MountOpts {
        MountOpts {
            id_map: Some(map),
            ..MountOpts::default()
        }
    }
}

/// The kind of a change, as `docker diff` prints it (`A`, `C`, `D`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    /// The path exists in the layer but not in the parent.
    Added,
    /// The path exists in both, and its content, type or metadata differs, or it is a
    /// directory with a changed descendant.
    Modified,
    /// The path exists in the parent but not in the layer. A deleted directory is reported
    /// once, without its contents.
    Deleted,
}

impl ChangeKind {
    /// The one-letter code `docker diff` uses.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Modified => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path of a layer, relative to its parent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Change {
    /// The absolute path inside the layer, beginning with `/` (not necessarily UTF-8).
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.letter(), self.path.display())
    }
}

/// What the driver records about a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// The layer.
    pub id: LayerId,
    /// Its parent, if any.
    pub parent: Option<LayerId>,
    /// A writable container layer (`true`) or an image layer.
    pub read_write: bool,
    /// When it was created.
    pub created: SystemTime,
    /// Its size limit, if one was set.
    pub size_limit: Option<u64>,
    /// Backend-specific facts about the layer (paths, device names, usage).
    pub backend: BTreeMap<String, String>,
}

/// `status` output: ordered key/value pairs.
pub type Status = Vec<(String, String)>;

/// One `mount(2)` call that shows a writable layer, for a caller that mounts for itself
/// (containerd mounts what its snapshotter returns): see [`GraphDriver::mount_spec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The filesystem type (`overlay`), or `bind`.
    pub fs_type: String,
    /// The source: a directory for `bind`, the filesystem's name otherwise.
    pub source: PathBuf,
    /// Mount options as fstab spells them (`rbind`, `lowerdir=...`); joined with commas they
    /// are `mount(2)`'s data, which fits in a page.
    pub options: Vec<String>,
}

/// A container storage driver: a graph of layers, each a filesystem tree that starts as a
/// copy-on-write view of its parent.
///
/// See the crate documentation for the model and the invariants every implementation keeps.
/// Every method documents the conformance case (in `graphdriver-conformance`) that checks it.
pub trait GraphDriver: Send + Sync + fmt::Debug {
    /// The driver's name (`vfs`, `overlay2`, ...).
    fn name(&self) -> &'static str;

    /// Creates layer `id` on top of `parent` (or empty, with a `0755 root:root` root).
    ///
    /// Fails with `AlreadyExists`, `NotFound` (the parent) or `InvalidId`, and then creates
    /// nothing. A child's root takes its parent's root mode and owner.
    /// Checked by `lifecycle::empty_layer_has_bare_root`, `lifecycle::duplicate_id_is_rejected`,
    /// `lifecycle::missing_parent_is_rejected`, `content::special_modes_seen_through_child`.
    fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()>;

    /// Removes layer `id`: `HasChildren` if it has children, `Busy` if it is mounted,
    /// `NotFound` if it does not exist. A removal is never half-visible: the layer is gone
    /// from `list` and `exists` before its data is deleted, and an interrupted removal is
    /// finished at the next open.
    /// Checked by `lifecycle::remove_with_children_fails`, `lifecycle::remove_mounted_fails`.
    fn remove(&self, id: &LayerId) -> Result<()>;

    /// Mounts the layer (or reuses its mount) and returns the path of its root. Every call
    /// must be matched by a [`put`](Self::put); the count survives the process and is
    /// reconciled with the kernel's mount table when a driver is opened. A layer that has
    /// children is exposed read-only. A non-empty mount label is refused with `Unsupported`
    /// (see [`CreateOpts::mount_label`]).
    ///
    /// With [`MountOpts::id_map`] the mount is idmapped (overlay2 idmaps each of its layers,
    /// the others their one mount). A layer is mounted with one map at a time: `get` with
    /// the map it is mounted with nests, with another fails with `Busy` (each container
    /// has its own writable layer; image layers below it are shared by every map). A
    /// filesystem that cannot be idmapped gives `Unsupported`, a bad map `InvalidIdMap`.
    /// Checked by `lifecycle::mount_counts_nest`, `lifecycle::layer_with_children_is_read_only`,
    /// `lifecycle::a_mount_label_is_refused_not_dropped`,
    /// `concurrency::processes_mount_and_unmount_one_layer`, and the `idmap::*` cases.
    fn get(&self, id: &LayerId, opts: &MountOpts) -> Result<PathBuf>;

    /// Releases one [`get`](Self::get); unmounts at zero. Never fails because a copy of the
    /// mount leaked into another mount namespace.
    fn put(&self, id: &LayerId) -> Result<()>;

    /// Whether the layer exists.
    fn exists(&self, id: &LayerId) -> bool;

    /// Every layer, in no particular order.
    fn list(&self) -> Result<Vec<LayerId>>;

    /// The layer's parent.
    fn parent(&self, id: &LayerId) -> Result<Option<LayerId>>;

    /// What the driver records about the layer.
    fn metadata(&self, id: &LayerId) -> Result<LayerInfo>;

    /// How a caller that mounts for itself can show writable layer `id` with one `mount(2)`,
    /// without the driver mounting it: overlay2 gives the overlay mount over the layer's
    /// directories (writes land straight in its upper directory), or a bind mount of a layer
    /// without parent. `None` when the backend has no such mount, when the options would
    /// not fit in the page `mount(2)` takes (the caller then uses [`get`](Self::get), which
    /// has no such limit), or when `id` has children (it is read-only: use `get`).
    ///
    /// The driver does not count such mounts: the caller unmounts before it removes the
    /// layer, creates a child of it or exports it.
    /// Checked by `lifecycle::mount_spec_shows_a_writable_layer`.
    fn mount_spec(&self, id: &LayerId) -> Result<Option<MountSpec>> {
        let _ = id;
        Ok(None)
    }

    /// Key/value facts about the driver: backing filesystem, layer count, kernel features used.
    fn status(&self) -> Status;

    /// Unmounts everything this driver mounted and releases kernel resources. The layers stay.
    fn cleanup(&self) -> Result<()>;

    /// Checks the store against itself and its backend and, with `repair`, repairs what it
    /// can, saying what it did (see [`crate::FsckReport`]): what opening it settled, records
    /// without data, graph edges and records that disagree, stray or wrong mount counts. A
    /// runtime can call it at start; `graphctl fsck` is the operator's way to it.
    /// Checked by `lifecycle::fsck_finds_and_repairs_planted_damage`.
    fn fsck(&self, repair: bool) -> Result<crate::FsckReport> {
        let _ = repair;
        Err(crate::DriverError::Unsupported {
            driver: self.name(),
            reason: "fsck needs a layer store".to_owned(),
        })
    }

    /// An OCI layer tar of what `id` changed relative to `parent` (default: its own parent; a
    /// layer without a parent exports its whole tree). The output is deterministic: the same
    /// content gives the same bytes. The layers stay mounted until the reader is dropped.
    /// Checked by `diff::export_is_deterministic`, `diff::diff_then_apply_round_trips`.
    fn diff<'a>(
        &'a self,
        id: &LayerId,
        parent: Option<&LayerId>,
    ) -> Result<Box<dyn Read + Send + 'a>>;

    /// The changes of `id` relative to `parent` (default: its own parent), sorted by path,
    /// with `docker diff` semantics.
    /// Checked by `diff::changes_report_ancestors_once`, `diff::deleted_directory_is_one_change`.
    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>>;

    /// Applies an OCI layer tar to `id`, a layer with no children that is not mounted, and
    /// returns the applied size: the bytes of regular files, each hardlinked inode once, equal
    /// to [`diff_size`](Self::diff_size) afterwards. All or nothing: on error the layer is as
    /// before the call, and a crash part-way is repaired at the next open. The applied files
    /// are on the disk before the layer shows them (`syncfs` of the layer's filesystem), so an
    /// I/O error the kernel meets only at write-back fails the call, and a power loss after
    /// it returned does not leave empty files. `parent` is
    /// accepted for compatibility with other graph driver APIs; the archive always applies to
    /// the layer as it is.
    /// Checked by the `diff::*` and `bad_input::*` cases.
    fn apply_diff(&self, id: &LayerId, parent: Option<&LayerId>, tar: &mut dyn Read)
        -> Result<u64>;

    /// The bytes a [`diff`](Self::diff) would carry: regular-file content, each inode once.
    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64>;

    /// Disk bytes the backend itself accounts to layer `id`, read without walking the layer
    /// (the backend may first sync its pending writes, or activate a device): zfs's `used`
    /// (what the dataset does not share with its origin), btrfs's qgroup exclusive bytes of
    /// a layer without children (once qgroups are on in its filesystem: the first layer
    /// with a size limit turns them on), devmapper's mapped blocks of
    /// the thin device (its own and those it shares with its origin, as containerd's
    /// devmapper reports; the pool keeps no count of a device's own blocks). `None` where the
    /// backend keeps no such account (vfs, overlay2, btrfs without qgroups): a caller then
    /// walks the layer ([`diff_size`](Self::diff_size)).
    /// Checked by `lifecycle::disk_usage_counts_what_a_layer_wrote`.
    fn disk_usage(&self, id: &LayerId) -> Result<Option<u64>> {
        let _ = id;
        Ok(None)
    }
}
