//! The layer store every backend shares.
//!
//! [`LayerStore`] keeps what is common to all backends: layer records (parent, kind, created),
//! the parent/children graph and its rules, mount counts that survive the process, the locks
//! that make it safe across processes, and the crash journal. A backend implements
//! [`Backend`]: how to make, destroy, mount and unmount one layer's data, and optionally
//! native change lists. `LayerStore<B>` is then a complete [`GraphDriver`].
//!
//! Layout under the driver's home (`<root>/<driver>/.store/`; the backend owns the rest of
//! `<root>/<driver>/`):
//!
//! ```text
//! .lock                  flock: creating, removing and recovering layers
//! layers/<id>.json       the layer's record; a layer exists exactly when this file does
//! children/<id>/<child>  the parent/children graph, one empty file per edge
//! mounts/<id>            "<boot id> <count>": the mount count, void after a reboot
//! locks/<id>.lock        flock: mounting, unmounting and applying to one layer
//! journal/<id>.json      the operation in flight on that layer, if any
//! quarantine/<id>.json   why that layer was set aside (see [`Quarantine`])
//! ```
//!
//! One bad layer never makes the store unusable: a journal record that cannot be settled
//! (finished or rolled back) at open, or after a merge failed, retires into a quarantine
//! record for its layer alone; every other layer keeps working.
//!
//! Lock order: the store lock before a layer lock, never the reverse. `get`, `put` and
//! `apply_diff` take only the layer lock, so mounting one layer never waits for an import of
//! another.

mod fsck;
mod journal;
mod lock;
mod quarantine;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use crate::fs::atomic_file::{write_atomic, write_durable};
pub use graphdriver_api::{Finding, FindingKind, FsckReport};
pub use journal::{Entry, Journal, Operation, Pending};
pub use lock::FileLock;
pub use quarantine::{Quarantine, QuarantineRecord};

use crate::fs::atomic_file::{read_optional, remove_optional};

use crate::archive::{self, ApplyTarget};
use crate::idmap::{IdMap, UserNs};
use crate::layer_mount;
use crate::mountinfo::MountTable;
use crate::naive::NaiveDiff;
use crate::options::StoreOptions;
use crate::{
    Change, CreateOpts, DriverError, GraphDriver, IoContext, LayerId, LayerInfo, MountOpts,
    MountSpec, Result, Status,
};

/// What a backend provides to the shared [`LayerStore`].
///
/// The store calls these with the right locks held and after checking the graph rules, so a
/// backend only deals with its own data. Every method must be safe to call again after a
/// crash part-way through an earlier call.
pub trait Backend: Send + Sync + fmt::Debug + Sized + 'static {
    /// The driver's name.
    fn name(&self) -> &'static str;

    /// Makes the data of a new layer: empty (root `0755 root:root`), or a copy-on-write child
    /// of `parent`. Returns backend facts to keep in the layer's record.
    fn make(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<BTreeMap<String, String>>;

    /// Deletes all data of `id`. Succeeds when there is none (used to roll back a create).
    fn destroy(&self, id: &LayerId) -> Result<()>;

    /// Where `id` is mounted while its mount count is above zero.
    fn mount_point(&self, id: &LayerId) -> PathBuf;

    /// Mounts `id` at its [`mount_point`](Self::mount_point); `ancestors` are its parent,
    /// grandparent and so on; `read_only` when the layer has children. Called when the mount
    /// count goes from zero to one. `idmap` is given only to a backend whose
    /// [`idmaps_layers`](Self::idmaps_layers) says so for these ancestors; it then mounts
    /// the layer showing ids through that user namespace.
    fn mount(
        &self,
        id: &LayerId,
        ancestors: &[LayerId],
        read_only: bool,
        idmap: Option<&UserNs>,
    ) -> Result<()>;

    /// Whether [`mount`](Self::mount) applies an id map itself, for a layer with these
    /// ancestors. The default, `false`, leaves it to the store: it keeps the backend's mount
    /// unmapped (for its own diffs) and attaches an idmapped copy of it beside it, which
    /// every filesystem that allows idmapped mounts can show. overlay2 cannot idmap an
    /// overlay, only the layers under it, so it idmaps them itself.
    fn idmaps_layers(&self, _ancestors: &[LayerId]) -> bool {
        false
    }

    /// Unmounts `id`. Must not fail because a copy of the mount is held in another namespace,
    /// nor when it is not mounted.
    fn unmount(&self, id: &LayerId) -> Result<()>;

    /// Whether `id` is mounted, according to `mounts`.
    fn is_mounted(&self, id: &LayerId, mounts: &MountTable) -> bool {
        mounts.contains(&self.mount_point(id))
    }

    /// Where [`LayerStore::apply_diff`] writes `id`'s content, and how; `ancestors` as for
    /// [`mount`](Self::mount).
    fn apply_target(&self, id: &LayerId, ancestors: &[LayerId]) -> Result<ApplyTarget>;

    /// Called when an apply to `id` ended, failed or was settled after a crash, with the
    /// layer's lock held: a backend that mounted the layer for
    /// [`apply_target`](Self::apply_target) lets go of it here.
    fn apply_finished(&self, _id: &LayerId) -> Result<()> {
        Ok(())
    }

    /// One `mount(2)` that shows writable layer `id` without the backend mounting it (see
    /// [`GraphDriver::mount_spec`]); `ancestors` as for [`mount`](Self::mount). The default,
    /// `None`, means the backend has none.
    fn mount_spec(&self, _id: &LayerId, _ancestors: &[LayerId]) -> Result<Option<MountSpec>> {
        Ok(None)
    }

    /// Disk bytes the backend accounts to `id` (see [`GraphDriver::disk_usage`]), told
    /// whether the layer has children (which share its blocks); the default, `None`, means
    /// it keeps no such account.
    fn disk_usage(&self, _id: &LayerId, _has_children: bool) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Backend-specific status lines.
    fn status(&self) -> Status;

    /// Called by [`GraphDriver::cleanup`] after every layer is unmounted (store lock held):
    /// releases what the backend holds beyond mounts (devices, pools).
    fn cleanup(&self) -> Result<()> {
        Ok(())
    }

    /// Every layer the backend holds data for, so that data no record names (left by a
    /// crash, or a power loss that took an unflushed journal record with it) is removed when
    /// the store opens. The default, an empty list, opts out.
    fn stored_ids(&self) -> Result<Vec<LayerId>> {
        Ok(Vec::new())
    }

    /// Whether [`stored_ids`](Self::stored_ids) lists everything the backend holds, so that
    /// `fsck` can report a record whose data is gone. The default (false) goes with the
    /// default `stored_ids`.
    fn tracks_stored_ids(&self) -> bool {
        false
    }

    /// A directory holding every added and modified entry of `id`'s native change list at
    /// its path (overlay's upper directory), so a diff can be read without mounting the
    /// layer. Only consulted when [`native_changes`](Self::native_changes) answered.
    fn native_diff_root(&self, _id: &LayerId) -> Option<PathBuf> {
        None
    }

    /// Native change list of `id` against `parent`, its own parent, when the backend has one.
    /// (A layer without parent is a whole tree: the store walks and exports it itself.)
    fn native_changes(
        &self,
        _store: &LayerStore<Self>,
        _id: &LayerId,
        _parent: &LayerId,
    ) -> Option<Result<Vec<Change>>> {
        None
    }
}

/// A graph of layers kept by one [`Backend`]; implements [`GraphDriver`].
#[derive(Debug)]
pub struct LayerStore<B: Backend> {
    home: PathBuf,
    /// `<home>/.store`: records, graph, counts, locks, journal (layer ids never begin with
    /// `.`, so this never collides with a backend's per-layer directories).
    meta: PathBuf,
    boot_id: String,
    journal: Journal,
    quarantine: Quarantine,
    backend: B,
    /// What opening the store settled or set aside, for [`LayerStore::fsck`].
    opened: std::sync::Mutex<Vec<Finding>>,
    /// User namespaces made for id maps, kept for the next mount with the same map (a
    /// runtime starts many containers with one map); the last [`USER_NAMESPACES`].
    user_namespaces: std::sync::Mutex<Vec<std::sync::Arc<UserNs>>>,
    options: StoreOptions,
}

/// How many user namespaces a store keeps for id maps.
const USER_NAMESPACES: usize = 16;

const DIRS: [&str; 7] = [
    "layers",
    "children",
    "mounts",
    "idmapped",
    "locks",
    "journal",
    "quarantine",
];

/// Where the kernel says which boot this is.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// This boot's id, which mount counts and probe caches are kept under (a count from another
/// boot is 0: nothing survives a reboot mounted). An id that cannot be read is an error, not
/// an empty string: counts written under an empty id could not be read back.
pub fn boot_id() -> Result<String> {
    boot_id_from(Path::new(BOOT_ID))
}

fn boot_id_from(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).ctx("read the boot id from", path)?;
    let id = text.trim();
    if id.is_empty() || id.contains(char::is_whitespace) {
        return Err(DriverError::Corrupt {
            path: path.to_owned(),
            reason: format!("{id:?} is not a boot id"),
        });
    }
    Ok(id.to_owned())
}

impl<B: Backend> LayerStore<B> {
    /// Refuses a non-empty mount label (an empty one is none, as moby passes it): no backend
    /// applies SELinux labels (`context=`) yet, and mounting the layer without it would leave
    /// a container's files unlabelled without a word.
    fn refuse_mount_label(&self, label: Option<&str>) -> Result<()> {
        match label {
            Some(l) if !l.is_empty() => Err(DriverError::Unsupported {
                driver: self.backend.name(),
                reason: format!(
                    "mount label {l:?}: {}",
                    if Path::new("/sys/fs/selinux").exists() {
                        "graphdriver does not apply SELinux mount labels (context=) yet; \
                         relabel the layer's files instead"
                    } else {
                        "this kernel has no SELinux (no /sys/fs/selinux), so nothing can apply it"
                    }
                ),
            }),
            _ => Ok(()),
        }
    }

    /// A user namespace with `map`: one this store made before, or a new one it keeps.
    fn user_ns(&self, map: &IdMap) -> Result<std::sync::Arc<UserNs>> {
        let mut kept = self
            .user_namespaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(ns) = kept.iter().find(|ns| ns.map() == map) {
            return Ok(ns.clone());
        }
        let ns = std::sync::Arc::new(UserNs::new(map)?);
        if kept.len() >= USER_NAMESPACES {
            kept.remove(0);
        }
        kept.push(ns.clone());
        Ok(ns)
    }

    /// Opens the store at `home` (created if absent), finishing or rolling back any operation
    /// a crashed process left half-done and reconciling mount counts with the kernel.
    pub fn open(home: &Path, backend: B) -> Result<Self> {
        Self::open_with(home, backend, StoreOptions::default())
    }

    /// [`LayerStore::open`] with the store's options (see [`crate::options`]).
    pub fn open_with(home: &Path, backend: B, options: StoreOptions) -> Result<Self> {
        let meta = home.join(".store");
        for d in DIRS {
            let p = meta.join(d);
            std::fs::create_dir_all(&p).ctx("create directory", &p)?;
        }
        let boot_id = boot_id()?;
        let store = LayerStore {
            home: home.to_owned(),
            boot_id,
            journal: Journal::new(meta.join("journal"), meta.join("space-reserve")),
            quarantine: Quarantine::new(meta.join("quarantine")),
            meta,
            backend,
            opened: Default::default(),
            user_namespaces: Default::default(),
            options,
        };
        let _lock = store.lock()?;
        store.recover()?;
        store.reconcile_mounts()?;
        Ok(store)
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The driver's home directory (`<root>/<driver>`).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The crash journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The layers set aside because an operation on them could not be settled.
    pub fn quarantine(&self) -> &Quarantine {
        &self.quarantine
    }

    /// Takes the store lock (creating, removing, recovering).
    pub fn lock(&self) -> Result<FileLock> {
        FileLock::exclusive(&self.meta.join(".lock"))
    }

    /// Takes the lock of one layer (mounting, unmounting, applying).
    pub fn lock_layer(&self, id: &LayerId) -> Result<FileLock> {
        FileLock::exclusive(&self.meta.join("locks").join(format!("{id}.lock")))
    }

    fn record_path(&self, id: &LayerId) -> PathBuf {
        self.meta.join("layers").join(format!("{id}.json"))
    }

    /// The layer's record, or `None`.
    pub fn record(&self, id: &LayerId) -> Result<Option<LayerInfo>> {
        let path = self.record_path(id);
        match read_optional(&path)? {
            None => Ok(None),
            Some(data) => {
                serde_json::from_slice(&data)
                    .map(Some)
                    .map_err(|e| DriverError::Corrupt {
                        path,
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// The layer's record, or `NotFound`.
    pub fn require(&self, id: &LayerId) -> Result<LayerInfo> {
        self.record(id)?
            .ok_or_else(|| DriverError::NotFound(id.clone()))
    }

    fn write_record(&self, info: &LayerInfo) -> Result<()> {
        let path = self.record_path(&info.id);
        let data = serde_json::to_vec_pretty(info).map_err(|e| DriverError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        // Atomic but not flushed, like a container's writes: after a power loss a layer
        // created just before is whole or absent (its data is then swept by `stored_ids`).
        write_atomic(&path, &data)
    }

    /// The layer's record, or `NotFound`, or `Quarantined` when it was set aside.
    pub fn require_usable(&self, id: &LayerId) -> Result<LayerInfo> {
        let rec = self.require(id)?;
        match self.quarantine.get(id)? {
            Some(q) => Err(DriverError::Quarantined {
                id: id.clone(),
                reason: q.reason,
            }),
            None => Ok(rec),
        }
    }

    /// The layer's parent, grandparent and so on, closest first.
    pub fn ancestors(&self, id: &LayerId) -> Result<Vec<LayerId>> {
        let mut out = Vec::new();
        let mut cur = self.require(id)?.parent;
        while let Some(p) = cur {
            if out.contains(&p) || out.len() > 100_000 {
                return Err(DriverError::Corrupt {
                    path: self.record_path(&p),
                    reason: "the parent chain has a cycle".into(),
                });
            }
            cur = self.require(&p)?.parent;
            out.push(p);
        }
        Ok(out)
    }

    /// The layer's children.
    pub fn children(&self, id: &LayerId) -> Result<Vec<LayerId>> {
        let dir = self.meta.join("children").join(id.as_str());
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).ctx("read directory", &dir),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.ctx("read directory", &dir)?;
            if let Some(child) = ent.file_name().to_str().and_then(|s| LayerId::new(s).ok()) {
                out.push(child);
            }
        }
        out.sort();
        Ok(out)
    }

    fn edge_path(&self, parent: &LayerId, child: &LayerId) -> PathBuf {
        self.meta
            .join("children")
            .join(parent.as_str())
            .join(child.as_str())
    }

    fn add_edge(&self, parent: &LayerId, child: &LayerId) -> Result<()> {
        let path = self.edge_path(parent, child);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ctx("create directory", dir)?;
        }
        std::fs::write(&path, b"").ctx("create", &path)
    }

    fn remove_edge(&self, parent: &LayerId, child: &LayerId) -> Result<()> {
        remove_optional(&self.edge_path(parent, child))?;
        let dir = self.meta.join("children").join(parent.as_str());
        let _ = std::fs::remove_dir(dir); // only succeeds when empty
        Ok(())
    }

    fn count_path(&self, id: &LayerId) -> PathBuf {
        self.meta.join("mounts").join(id.as_str())
    }

    /// Where the store attaches the idmapped copy of `id`'s mount, for a backend that does
    /// not idmap its layers itself.
    fn idmapped_path(&self, id: &LayerId) -> PathBuf {
        self.meta.join("idmapped").join(id.as_str())
    }

    /// The layer's mount count (0 after a reboot).
    pub fn mount_count(&self, id: &LayerId) -> Result<u32> {
        Ok(self.mount_state(id)?.count)
    }

    /// The layer's mount count and the id map it is mounted with. The file holds
    /// `<boot id> <count>`, then for a mapped mount `view` (the store's idmapped copy) or
    /// `native` (the backend's own mount) and the map.
    fn mount_state(&self, id: &LayerId) -> Result<MountState> {
        let path = self.count_path(id);
        let Some(data) = read_optional(&path)? else {
            return Ok(MountState::default());
        };
        let text = String::from_utf8_lossy(&data);
        let corrupt = |reason: String| DriverError::Corrupt {
            path: path.clone(),
            reason,
        };
        let mut parts = text.trim().splitn(4, ' ');
        let (boot, count) = (parts.next(), parts.next().and_then(|c| c.parse().ok()));
        let (Some(boot), Some(count)) = (boot, count) else {
            return Err(corrupt(
                "mount count is not \"<boot id> <count>[ view|native <id map>]\"".into(),
            ));
        };
        if boot != self.boot_id {
            return Ok(MountState::default());
        }
        let (map, native) = match (parts.next(), parts.next()) {
            (None, None) => (None, false),
            (Some(how @ ("view" | "native")), Some(map)) => (
                Some(map.parse::<IdMap>().map_err(|e| corrupt(e.to_string()))?),
                how == "native",
            ),
            _ => return Err(corrupt("mount count has an unknown id map part".into())),
        };
        Ok(MountState { count, map, native })
    }

    fn set_mount_state(&self, id: &LayerId, state: &MountState) -> Result<()> {
        let path = self.count_path(id);
        if state.count == 0 {
            return remove_optional(&path);
        }
        let mut text = format!("{} {}", self.boot_id, state.count);
        if let Some(map) = &state.map {
            let how = if state.native { "native" } else { "view" };
            text.push_str(&format!(" {how} {map}"));
        }
        text.push('\n');
        write_atomic(&path, text.as_bytes())
    }

    /// Sets the layer's mount count to 0 (nothing mounted, no map).
    fn reset_mount_count(&self, id: &LayerId) -> Result<()> {
        self.set_mount_state(id, &MountState::default())
    }

    /// Unmounts everything the store mounted for `id`: the idmapped copy, if any, then the
    /// backend's mount.
    fn release_mounts(&self, id: &LayerId) -> Result<()> {
        layer_mount::unmount_and_remove(&self.idmapped_path(id))?;
        self.backend.unmount(id)
    }

    /// Settles every journal record a crash left, and sweeps data no record names. What
    /// cannot be settled quarantines its layer alone: only a store whose own directories
    /// cannot be read or written fails to open.
    fn recover(&self) -> Result<()> {
        for pending in self.journal.pending()? {
            match pending {
                Pending::Entry(entry) => {
                    let what = format!("{} of {}", entry.op.name(), entry.id);
                    let f = Finding::new(FindingKind::InterruptedOperation, Some(&entry.id), what);
                    match self.recover_one(&entry) {
                        Ok(true) => self.note(f.repaired("settled when the store was opened")),
                        Ok(false) => {} // running in another process
                        Err(e) => {
                            self.quarantine_entry(&entry, &e)?;
                            self.note(f.repaired("could not be settled: quarantined"));
                        }
                    }
                }
                Pending::Unreadable { id, path, error } => {
                    self.journal.set_aside(&path)?;
                    if let Some(id) = id {
                        self.quarantine.add(
                            &id,
                            format!(
                                "its journal record cannot be read: {}",
                                quarantine::describe(&error)
                            ),
                            None,
                        )?;
                    }
                }
            }
        }
        for id in self.backend.stored_ids()? {
            match self.record(&id) {
                Ok(Some(_)) => {}
                Ok(None) => match self.backend.destroy(&id) {
                    Ok(()) => {
                        self.quarantine.release(&id)?;
                        self.note(
                            Finding::new(
                                FindingKind::OrphanData,
                                Some(&id),
                                format!("{} data no record names", self.backend.name()),
                            )
                            .repaired("deleted when the store was opened"),
                        );
                    }
                    Err(e) => self.quarantine.add(
                        &id,
                        format!(
                            "data of a removed layer could not be deleted: {}",
                            quarantine::describe(&e)
                        ),
                        None,
                    )?,
                },
                Err(e) => self.quarantine.add(
                    &id,
                    format!("its record cannot be read: {}", quarantine::describe(&e)),
                    None,
                )?,
            }
        }
        Ok(())
    }

    /// Retires a journal record that could not be settled into a quarantine record for its
    /// layer, so the store and every other layer stay usable.
    fn quarantine_entry(&self, entry: &Entry, error: &DriverError) -> Result<()> {
        let what = match &entry.op {
            Operation::Create => "create",
            Operation::Remove => "remove",
            Operation::Apply { staging, .. } => {
                // Best effort: the staging directory holds nothing the layer needs, and it
                // may lie inside the layer.
                let _ = crate::tree::remove_tree(staging);
                let _ = self.backend.apply_finished(&entry.id);
                "apply"
            }
        };
        self.quarantine.add(
            &entry.id,
            format!(
                "{what} could not be finished: {}",
                quarantine::describe(error)
            ),
            Some(entry.clone()),
        )?;
        self.journal.finish(&entry.id)
    }

    /// Settles `entry`; `false` when its operation is still running in another process.
    fn recover_one(&self, entry: &Entry) -> Result<bool> {
        let id = &entry.id;
        // Creates and removes hold the store lock, which we hold; an apply holds only its
        // layer's lock: if that is taken, the apply is running, not crashed.
        let _layer = match &entry.op {
            Operation::Apply { .. } => {
                match FileLock::try_exclusive(&self.meta.join("locks").join(format!("{id}.lock")))?
                {
                    Some(l) => Some(l),
                    None => return Ok(false),
                }
            }
            _ => None,
        };
        self.settle_entry(entry).map(|()| true)
    }

    /// Keeps what opening the store repaired, for [`LayerStore::fsck`].
    fn note(&self, f: Finding) {
        if let Ok(mut v) = self.opened.lock() {
            v.push(f);
        }
    }

    /// Finishes what a journal record says was left half-done (its locks held).
    fn settle_entry(&self, entry: &Entry) -> Result<()> {
        let id = &entry.id;
        match &entry.op {
            Operation::Create => {
                if self.record(id)?.is_none() {
                    self.backend.destroy(id)?;
                    self.remove_dangling_edges(id)?;
                }
            }
            Operation::Remove => {
                let parent = self.record(id)?.and_then(|r| r.parent);
                remove_optional(&self.record_path(id))?;
                if let Some(p) = parent {
                    self.remove_edge(&p, id)?;
                }
                self.remove_dangling_edges(id)?;
                self.backend.destroy(id)?;
                remove_optional(&self.count_path(id))?;
            }
            Operation::Apply {
                staging,
                target,
                lowers,
                merging,
                root_mtime,
            } => {
                // the backend makes the target reachable again (devmapper mounts it)
                let xattrs = match self.record(id)? {
                    Some(_) => {
                        self.backend
                            .apply_target(id, &self.ancestors(id)?)?
                            .overlay_xattrs
                    }
                    None => archive::OverlayXattrs::default(),
                };
                let settled = (|| {
                    if *merging {
                        archive::resume_merge(staging, target, lowers, xattrs)?;
                    }
                    crate::tree::remove_tree(staging)?;
                    if let (false, Some((sec, nsec))) = (*merging, root_mtime) {
                        set_mtime(target, *sec, *nsec)?;
                    }
                    Ok(())
                })();
                let finished = self.backend.apply_finished(id);
                settled?;
                finished?;
            }
        }
        self.journal.finish(id)
    }

    /// Finishes an apply to `id` whose merge failed part-way in a process that is still
    /// running (this one): the layer must not be used half-merged until the next open. The
    /// caller holds the layer lock.
    fn settle(&self, id: &LayerId) -> Result<()> {
        match self.journal.get(id)? {
            Some(entry) if matches!(entry.op, Operation::Apply { merging: true, .. }) => {
                match self.settle_entry(&entry) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        self.quarantine_entry(&entry, &e)?;
                        self.require_usable(id).map(|_| ())
                    }
                }
            }
            _ => Ok(()),
        }
    }

    /// Removes edges naming `id` as a child (its record is gone).
    fn remove_dangling_edges(&self, id: &LayerId) -> Result<()> {
        let dir = self.meta.join("children");
        for ent in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
            let ent = ent.ctx("read directory", &dir)?;
            let edge = ent.path().join(id.as_str());
            if edge.exists() {
                remove_optional(&edge)?;
            }
        }
        Ok(())
    }

    fn reconcile_mounts(&self) -> Result<()> {
        let table = MountTable::read()?;
        for id in self.list()? {
            // One layer's unreadable count or stuck mount is that layer's problem: its own
            // operations report it, and the store opens.
            let _ = self.reconcile_mount(&id, &table);
        }
        self.sweep_idmapped();
        Ok(())
    }

    /// Detaches and removes idmapped copies no mount count records (left by a process
    /// killed between attaching one and counting it, or by a reboot). Best effort: what
    /// cannot be swept now is left for the next open.
    fn sweep_idmapped(&self) {
        let dir = self.meta.join("idmapped");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for ent in entries.flatten() {
            let path = ent.path();
            let sweep = || detach_all(&path).and_then(|()| layer_mount::unmount_and_remove(&path));
            let Ok(id) = LayerId::new(ent.file_name().to_string_lossy()) else {
                let _ = sweep();
                continue;
            };
            // under the layer's lock: a get in another process attaches and counts under it
            let Ok(_layer) = self.lock_layer(&id) else {
                continue;
            };
            // an unreadable count is left to the layer's own operations to report
            let recorded = self
                .mount_state(&id)
                .map(|s| s.count > 0 && s.map.is_some() && !s.native)
                .unwrap_or(true);
            if !recorded {
                let _ = sweep();
            }
        }
    }

    fn reconcile_mount(&self, id: &LayerId, table: &MountTable) -> Result<()> {
        if (self.mount_count(id)? > 0) == self.backend.is_mounted(id, table) {
            return Ok(());
        }
        // They disagree, perhaps because a process is between mounting and counting:
        // decide under the layer lock, with a fresh look at the kernel's table.
        let _layer = self.lock_layer(id)?;
        let count = self.mount_count(id)?;
        let mounted = self.backend.is_mounted(id, &MountTable::read()?);
        if count > 0 && !mounted {
            // mounted before a reboot, or unmounted behind our back
            self.reset_mount_count(id)?;
            self.note(
                Finding::new(
                    FindingKind::MountCountMismatch,
                    Some(id),
                    format!("its mount count was {count}, but it was not mounted"),
                )
                .repaired("count reset when the store was opened"),
            );
        } else if count == 0 && mounted {
            // a process died between mounting and counting
            self.release_mounts(id)?;
            self.note(
                Finding::new(
                    FindingKind::MountCountMismatch,
                    Some(id),
                    "mounted, but its mount count was 0".to_owned(),
                )
                .repaired("unmounted when the store was opened"),
            );
        }
        Ok(())
    }

    /// The directory a naive diff reads `id` from while it is mounted.
    fn mounted_view(&self, id: &LayerId) -> Result<Mounted<'_, B>> {
        let path = self.get(id, &MountOpts::default())?;
        Ok(Mounted {
            store: self,
            id: id.clone(),
            path,
        })
    }

    fn resolve_parent(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Option<LayerId>> {
        let rec = self.require_usable(id)?;
        let parent = match parent {
            Some(p) => Some(p.clone()),
            None => rec.parent,
        };
        if let Some(p) = &parent {
            self.require_usable(p)?;
        }
        Ok(parent)
    }
}

/// Detaches every mount stacked at `mnt` (none is fine).
fn detach_all(mnt: &Path) -> Result<()> {
    loop {
        match rustix::mount::unmount(mnt, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) => {}
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e).ctx("unmount", mnt),
        }
    }
}

/// A layer's mount count and the id map it is mounted with.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct MountState {
    count: u32,
    /// The map its idmapped mount shows, if any.
    map: Option<IdMap>,
    /// The backend's own mount is the idmapped one (overlay2), not a copy beside it.
    native: bool,
}

/// Removes a staging directory; when it lies inside the layer (btrfs), the layer root keeps
/// the mtime it had before (`before`, after a failed apply) or that the archive gave it.
fn remove_staging(staging: &Path, target: &Path, before: Option<rustix::fs::Stat>) -> Result<()> {
    if !staging.starts_with(target) {
        return crate::tree::remove_tree(staging);
    }
    let st = match before {
        Some(st) => st,
        None => rustix::fs::stat(target).ctx("stat", target)?,
    };
    crate::tree::remove_tree(staging)?;
    set_mtime(target, st.st_mtime, st.st_mtime_nsec as i64)
}

fn set_mtime(path: &Path, sec: i64, nsec: i64) -> Result<()> {
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        },
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &ts, rustix::fs::AtFlags::empty())
        .ctx("set times of", path)
}

/// A layer held mounted until dropped.
#[derive(Debug)]
pub struct Mounted<'a, B: Backend> {
    store: &'a LayerStore<B>,
    id: LayerId,
    path: PathBuf,
}

impl<B: Backend> Mounted<'_, B> {
    /// The mounted root.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl<B: Backend> Drop for Mounted<'_, B> {
    fn drop(&mut self) {
        let _ = self.store.put(&self.id);
    }
}

impl<B: Backend> GraphDriver for LayerStore<B> {
    fn name(&self) -> &'static str {
        self.backend.name()
    }

    fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        self.refuse_mount_label(opts.mount_label.as_deref())?;
        // No backend takes per-layer storage options yet: refused before anything is written.
        if let Some(k) = opts.storage_opts.keys().next() {
            return Err(DriverError::Unsupported {
                driver: self.backend.name(),
                reason: format!("unknown storage option {k}"),
            });
        }
        let _lock = self.lock()?;
        if self.record(id)?.is_some() {
            return Err(DriverError::AlreadyExists(id.clone()));
        }
        // what a quarantined create or remove left must be removed first
        if let Some(q) = self.quarantine.get(id)? {
            return Err(DriverError::Quarantined {
                id: id.clone(),
                reason: q.reason,
            });
        }
        // Hold the parent's layer lock so no archive is being applied to it meanwhile.
        let _parent_lock = match parent {
            Some(p) => {
                let l = self.lock_layer(p)?;
                self.require_usable(p)?;
                self.settle(p)?;
                Some(l)
            }
            None => None,
        };
        self.journal.write(&Entry {
            id: id.clone(),
            op: Operation::Create,
        })?;
        crate::failpoint::hit("create.after-journal");
        let made = self.backend.make(id, parent, opts).and_then(|backend| {
            crate::failpoint::hit("create.after-make");
            if let Some(p) = parent {
                self.add_edge(p, id)?;
            }
            self.write_record(&LayerInfo {
                id: id.clone(),
                parent: parent.cloned(),
                read_write: opts.read_write,
                created: SystemTime::now(),
                size_limit: opts.size_limit,
                backend,
            })
        });
        if let Err(error) = made {
            let rollback = self.backend.destroy(id).and_then(|()| {
                if let Some(p) = parent {
                    self.remove_edge(p, id)?;
                }
                self.journal.finish(id)
            });
            return Err(match rollback {
                Ok(()) => error,
                Err(rb) => DriverError::RollbackFailed {
                    error: Box::new(error),
                    rollback: Box::new(rb),
                },
            });
        }
        crate::failpoint::hit("create.after-record");
        self.journal.finish(id)
    }

    fn remove(&self, id: &LayerId) -> Result<()> {
        let _lock = self.lock()?;
        let _layer = self.lock_layer(id)?;
        let rec = match self.record(id)? {
            Some(rec) => rec,
            // a quarantined create or remove may have left data: removing the id ends it
            None if self.quarantine.get(id)?.is_some() => {
                self.journal.write(&Entry {
                    id: id.clone(),
                    op: Operation::Remove,
                })?;
                self.remove_dangling_edges(id)?;
                self.backend.destroy(id)?;
                remove_optional(&self.count_path(id))?;
                self.quarantine.release(id)?;
                return self.journal.finish(id);
            }
            None => return Err(DriverError::NotFound(id.clone())),
        };
        let children = self.children(id)?;
        if !children.is_empty() {
            return Err(DriverError::HasChildren {
                id: id.clone(),
                children,
            });
        }
        let count = self.mount_count(id)?;
        if count > 0 {
            return Err(DriverError::Busy {
                id: id.clone(),
                reason: format!("mounted {count} time(s)"),
            });
        }
        self.journal.write(&Entry {
            id: id.clone(),
            op: Operation::Remove,
        })?;
        // The record goes first: from here on the layer does not exist for anyone.
        remove_optional(&self.record_path(id))?;
        crate::failpoint::hit("remove.after-record");
        if let Some(p) = &rec.parent {
            self.remove_edge(p, id)?;
        }
        self.backend.destroy(id)?;
        crate::failpoint::hit("remove.after-destroy");
        remove_optional(&self.count_path(id))?;
        self.quarantine.release(id)?;
        // The layer's lock file stays: a process waiting on it must lock the same inode a
        // later layer of the same id will use.
        self.journal.finish(id)
    }

    fn get(&self, id: &LayerId, opts: &MountOpts) -> Result<PathBuf> {
        self.refuse_mount_label(opts.mount_label.as_deref())?;
        if let Some(map) = &opts.id_map {
            map.validate()?;
        }
        let _layer = self.lock_layer(id)?;
        self.require_usable(id)?;
        let mut state = self.mount_state(id)?;
        let first = state.count == 0;
        // what mounting, or refusing a map on an unmapped mount, needs
        let ancestors = if first || (opts.id_map.is_some() && state.map.is_none()) {
            self.ancestors(id)?
        } else {
            Vec::new()
        };
        let busy = |reason: String| DriverError::Busy {
            id: id.clone(),
            reason,
        };
        match (&state.map, &opts.id_map) {
            (Some(had), Some(want)) if had != want => {
                return Err(busy(format!(
                    "mounted with id map {had}; a layer shows one map at a time"
                )))
            }
            (Some(had), None) if state.native => {
                return Err(busy(format!(
                    "mounted with id map {had}, which {} applies to the mount itself",
                    self.backend.name()
                )))
            }
            (None, Some(want)) if !first && self.backend.idmaps_layers(&ancestors) => {
                return Err(busy(format!(
                    "mounted without an id map; {} cannot show it with {want} as well",
                    self.backend.name()
                )))
            }
            _ => {}
        }
        let mut mapped_now = false;
        if first {
            self.settle(id)?;
            let read_only = !self.children(id)?.is_empty();
            let native = opts.id_map.is_some() && self.backend.idmaps_layers(&ancestors);
            let ns = match &opts.id_map {
                Some(map) if native => Some(self.user_ns(map)?),
                _ => None,
            };
            self.backend
                .mount(id, &ancestors, read_only, ns.as_deref())?;
            crate::failpoint::hit("get.after-mount");
            state.native = native;
            mapped_now = native;
        }
        if let (Some(map), false) = (&opts.id_map, state.native || state.map.is_some()) {
            // the backend's mount stays as it is (its diffs read it); an idmapped copy of it
            // is attached beside it
            let view = self.idmapped_path(id);
            let made = self.user_ns(map).and_then(|ns| {
                layer_mount::make_mount_point(&view)?;
                // whatever a failed step left there first: nothing stacks
                detach_all(&view)?;
                crate::idmap::attach_idmapped(&self.backend.mount_point(id), &view, &ns)?;
                // private, as every mount of the store: it must not propagate
                rustix::mount::mount_change(&view, rustix::mount::MountPropagationFlags::PRIVATE)
                    .ctx("make mount private", &view)
            });
            if let Err(e) = made {
                let _ = layer_mount::unmount_and_remove(&view);
                if first {
                    let _ = self.backend.unmount(id);
                }
                return Err(e);
            }
            mapped_now = true;
        }
        if mapped_now {
            state.map = opts.id_map.clone();
        }
        let path = match (&opts.id_map, state.native) {
            (Some(_), false) => self.idmapped_path(id),
            _ => self.backend.mount_point(id),
        };
        state.count += 1;
        if let Err(e) = self.set_mount_state(id, &state) {
            if first {
                let _ = self.release_mounts(id);
            } else if mapped_now && !state.native {
                let _ = layer_mount::unmount_and_remove(&self.idmapped_path(id));
            }
            return Err(e);
        }
        Ok(path)
    }

    fn disk_usage(&self, id: &LayerId) -> Result<Option<u64>> {
        let _layer = self.lock_layer(id)?;
        self.require_usable(id)?;
        let has_children = !self.children(id)?.is_empty();
        self.backend.disk_usage(id, has_children)
    }

    fn mount_spec(&self, id: &LayerId) -> Result<Option<MountSpec>> {
        let _layer = self.lock_layer(id)?;
        self.require_usable(id)?;
        // read-only with children; and one overlay on an upper directory at a time
        if !self.children(id)?.is_empty() || self.mount_count(id)? > 0 {
            return Ok(None);
        }
        self.settle(id)?;
        let ancestors = self.ancestors(id)?;
        self.backend.mount_spec(id, &ancestors)
    }

    fn put(&self, id: &LayerId) -> Result<()> {
        let _layer = self.lock_layer(id)?;
        self.require(id)?;
        let mut state = self.mount_state(id)?;
        match state.count {
            0 => Err(DriverError::NotMounted(id.clone())),
            1 => {
                if state.map.is_some() && !state.native {
                    // the idmapped copy goes first, and the record says so before the
                    // backend's unmount, which may fail (a busy device)
                    layer_mount::unmount_and_remove(&self.idmapped_path(id))?;
                    state.map = None;
                    self.set_mount_state(id, &state)?;
                }
                self.release_mounts(id)?;
                crate::failpoint::hit("put.after-unmount");
                self.reset_mount_count(id)
            }
            n => {
                // an idmapped copy stays until the last put: the store cannot tell which
                // get a put matches
                state.count = n - 1;
                self.set_mount_state(id, &state)
            }
        }
    }

    fn exists(&self, id: &LayerId) -> bool {
        self.record_path(id).exists()
    }

    fn list(&self) -> Result<Vec<LayerId>> {
        let dir = self.meta.join("layers");
        let mut out = Vec::new();
        for ent in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
            let ent = ent.ctx("read directory", &dir)?;
            let name = ent.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| LayerId::new(n).ok())
            {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    fn parent(&self, id: &LayerId) -> Result<Option<LayerId>> {
        Ok(self.require(id)?.parent)
    }

    fn metadata(&self, id: &LayerId) -> Result<LayerInfo> {
        self.require(id)
    }

    fn status(&self) -> Status {
        let mut s = self.backend.status();
        let layers = self
            .list()
            .map(|l| l.len().to_string())
            .unwrap_or_else(|e| e.to_string());
        s.push(("Layers".into(), layers));
        let quarantined = match self.quarantine.list() {
            Ok(q) if q.is_empty() => "none".to_owned(),
            Ok(q) => q
                .iter()
                .map(|r| format!("{} ({})", r.id, r.reason))
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => e.to_string(),
        };
        s.push(("Quarantined Layers".into(), quarantined));
        s
    }

    fn fsck(&self, repair: bool) -> Result<FsckReport> {
        LayerStore::fsck(self, repair)
    }

    fn cleanup(&self) -> Result<()> {
        let _lock = self.lock()?;
        for id in self.list()? {
            let _layer = self.lock_layer(&id)?;
            if self.mount_count(&id)? > 0 {
                self.release_mounts(&id)?;
                self.reset_mount_count(&id)?;
            }
        }
        self.backend.cleanup()
    }

    fn diff<'a>(
        &'a self,
        id: &LayerId,
        parent: Option<&LayerId>,
    ) -> Result<Box<dyn Read + Send + 'a>> {
        let parent = self.resolve_parent(id, parent)?;
        if let Some(native) = self.native(id, parent.as_ref()) {
            let changes = native?;
            // Read what changed from where the backend keeps it, when it can say: no mount.
            if let Some(root) = self.backend.native_diff_root(id) {
                let reader = archive::export_in_background(root, Some(changes), Box::new(()))?;
                return Ok(Box::new(reader));
            }
            let layer = self.mounted_view(id)?;
            let root = layer.path().to_owned();
            let reader = archive::export_in_background(root, Some(changes), Box::new(layer))?;
            return Ok(Box::new(reader));
        }
        let layer = self.mounted_view(id)?;
        let base = parent.as_ref().map(|p| self.mounted_view(p)).transpose()?;
        let changes = match &base {
            Some(b) => Some(NaiveDiff::changes(layer.path(), b.path())?),
            None => None,
        };
        let reader = archive::export_in_background(
            layer.path().to_owned(),
            changes,
            Box::new((layer, base)),
        )?;
        Ok(Box::new(reader))
    }

    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        let parent = self.resolve_parent(id, parent)?;
        if let Some(native) = self.native(id, parent.as_ref()) {
            return native;
        }
        let layer = self.mounted_view(id)?;
        match parent {
            Some(p) => {
                let base = self.mounted_view(&p)?;
                NaiveDiff::changes(layer.path(), base.path())
            }
            None => NaiveDiff::all_added(layer.path()),
        }
    }

    fn apply_diff(
        &self,
        id: &LayerId,
        _parent: Option<&LayerId>,
        tar: &mut dyn Read,
    ) -> Result<u64> {
        let _layer = self.lock_layer(id)?;
        self.require_usable(id)?;
        self.settle(id)?;
        let children = self.children(id)?;
        if !children.is_empty() {
            return Err(DriverError::HasChildren {
                id: id.clone(),
                children,
            });
        }
        let count = self.mount_count(id)?;
        if count > 0 {
            return Err(DriverError::Busy {
                id: id.clone(),
                reason: format!("mounted {count} time(s)"),
            });
        }
        let target = self.backend.apply_target(id, &self.ancestors(id)?)?;
        let result = self.apply_into(id, &target, tar);
        let finished = self.backend.apply_finished(id);
        match (result, finished) {
            (Ok(size), Ok(())) => Ok(size),
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(e),
        }
    }

    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        let parent = self.resolve_parent(id, parent)?;
        if let Some(native) = self.native(id, parent.as_ref()) {
            let changes = native?;
            if let Some(root) = self.backend.native_diff_root(id) {
                return NaiveDiff::size(&root, &changes);
            }
            let layer = self.mounted_view(id)?;
            return NaiveDiff::size(layer.path(), &changes);
        }
        let layer = self.mounted_view(id)?;
        let changes = match &parent {
            Some(p) => {
                let base = self.mounted_view(p)?;
                NaiveDiff::changes(layer.path(), base.path())?
            }
            None => NaiveDiff::all_added(layer.path())?,
        };
        NaiveDiff::size(layer.path(), &changes)
    }
}

impl<B: Backend> LayerStore<B> {
    /// Applies `tar` to `target` (the layer lock held, the target reachable).
    fn apply_into(&self, id: &LayerId, target: &ApplyTarget, tar: &mut dyn Read) -> Result<u64> {
        // Applies to one layer are serialised by its lock, so this name is free but for the
        // leftovers of a crash, which the journal record written first lets recovery find.
        let staging = target
            .staging_parent
            .join(format!("{}{id}", archive::STAGING_PREFIX));
        // A staging directory inside the layer (btrfs) must not leave its trace on the root.
        let root_before = if staging.starts_with(&target.dir) {
            Some(rustix::fs::stat(&target.dir).ctx("stat", &target.dir)?)
        } else {
            None
        };
        let mut entry = Entry {
            id: id.clone(),
            op: Operation::Apply {
                staging: staging.clone(),
                target: target.dir.clone(),
                lowers: target.lowers.clone(),
                merging: false,
                root_mtime: root_before
                    .as_ref()
                    .map(|st| (st.st_mtime, st.st_mtime_nsec as i64)),
            },
        };
        // Opened before the first write, so that the syncfs below reports a write-back error
        // of anything this apply wrote, whenever the kernel met it.
        let fs = std::fs::File::open(&target.dir).ctx("open", &target.dir)?;
        self.journal.write(&entry)?;
        crate::tree::remove_tree(&staging)?;
        std::fs::create_dir_all(&staging).ctx("create directory", &staging)?;
        let result = archive::apply(tar, target, &staging, &mut || {
            // The staged files reach the disk before the merge makes them the layer's: a
            // failing disk (EIO) or a thin pool out of space, which the kernel meets only at
            // write-back, fails the apply while it can still be rolled back, and a power loss
            // after `apply_diff` returned never leaves the layer with empty files (the data
            // loss containerd#5854 and moby#49784 report). The merge's renames are metadata,
            // which the filesystem's own journal orders.
            rustix::fs::syncfs(&fs)
                .map_err(std::io::Error::from)
                .ctx("sync the filesystem of", &target.dir)?;
            if let Operation::Apply { merging, .. } = &mut entry.op {
                *merging = true;
            }
            self.journal.write(&entry)
        });
        if result.is_err() && matches!(entry.op, Operation::Apply { merging: true, .. }) {
            // Part-merged: the journal stays, so the next open finishes the merge.
            return result;
        }
        if result.is_ok() {
            crate::failpoint::hit("apply.after-merge");
        }
        let done = remove_staging(
            &staging,
            &target.dir,
            result.is_err().then_some(root_before).flatten(),
        )
        .and_then(|()| self.journal.finish(id));
        match (result, done) {
            (Ok(size), Ok(())) => Ok(size),
            (Err(e), Ok(())) => Err(e),
            (Ok(_), Err(e)) => Err(e),
            (Err(error), Err(rb)) => Err(DriverError::RollbackFailed {
                error: Box::new(error),
                rollback: Box::new(rb),
            }),
        }
    }
}

impl<B: Backend> LayerStore<B> {
    /// The native change list, when the backend has one and `parent` is the layer's own.
    fn native(&self, id: &LayerId, parent: Option<&LayerId>) -> Option<Result<Vec<Change>>> {
        let own = match self.require(id) {
            Ok(rec) => rec.parent,
            Err(e) => return Some(Err(e)),
        };
        if own.as_ref() != parent || !self.options.native_diff {
            return None;
        }
        self.backend.native_changes(self, id, own.as_ref()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_id_that_cannot_be_read_or_is_blank_is_an_error_not_an_empty_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("boot_id");
        assert!(matches!(
            boot_id_from(&file),
            Err(DriverError::Io {
                op: "read the boot id from",
                ..
            })
        ));
        for bad in ["", "\n", "two words\n"] {
            std::fs::write(&file, bad).unwrap();
            assert!(
                matches!(boot_id_from(&file), Err(DriverError::Corrupt { .. })),
                "{bad:?}"
            );
        }
        std::fs::write(&file, "0e6a2c2f-9d1b-4c55-8f47-1f9a3b2c7d10\n").unwrap();
        assert_eq!(
            boot_id_from(&file).unwrap(),
            "0e6a2c2f-9d1b-4c55-8f47-1f9a3b2c7d10"
        );
        // this machine's
        assert!(!boot_id().unwrap().is_empty());
    }
}
