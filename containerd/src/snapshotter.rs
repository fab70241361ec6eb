//! The snapshot model on top of graph driver layers, as containerd's own snapshotters keep
//! it: one layer per snapshot, keys and names in one namespace, records in [`Metadata`].
//!
//! Crash safety with the layer store: Prepare and Remove write their intent to the database
//! first (state `Creating`, `Removing`), then change the layers, then mark the record
//! `Ready` (or delete it); Commit releases the service's mount of the active snapshot's
//! layer, if it holds one (containerd unmounts its own mounts first), and then renames its
//! record in one transaction, so a crash leaves it active, as containerd (which rolls its
//! own record back when a call fails) still has it. [`Snapshotter::open`] finishes or rolls
//! back whatever a crash interrupted (and the `Releasing` state commits wrote before), and
//! sweeps layers that no record names, so a record never names a missing layer and no layer
//! is left that nothing names. `scripts/containerd-kill.sh` kills the service at each step
//! under containerd.
//!
//! Mounts: where the driver has one `mount(2)` that shows an active snapshot's layer
//! ([`GraphDriver::mount_spec`]: overlay2's overlay mount while its options fit in a page,
//! as containerd's own overlayfs snapshotter returns), containerd gets that and mounts it
//! itself, so a container writes straight into the layer's upper directory and the service
//! holds nothing. Otherwise (every view, the other backends, overlay chains too deep for a
//! page, which overlay2 mounts through the new mount API) the service mounts the layer with
//! [`GraphDriver::get`] once and hands containerd a bind mount of it (`ro` for a view). A
//! hold is recorded with the boot it was taken in: after a reboot the driver's mount counts
//! are void, and the next `Mounts` takes it again.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use graphdriver_api::idmap::IdMap;
use graphdriver_api::{CreateOpts, DriverError, GraphDriver, LayerId, MountOpts, MountSpec};
use graphdriver_kit::failpoint;

use crate::filter::{self, Filter};
use crate::metadata::Metadata;
use crate::model::{Held, Info, Kind, Mount, Record, Result, SnapshotError, State, Usage};

/// Layer ids of snapshots are this prefix and a number; the service sweeps only these.
pub const LAYER_PREFIX: &str = "ctrd-";

/// containerd's limit on one label's key and value together.
const MAX_LABEL_BYTES: usize = 4096;

/// At most this many `put`s release a layer (a crash can leave a few extra counts).
const MAX_RELEASE: usize = 64;

/// containerd's snapshotter on a graph driver. Operations are serialised; each is a few
/// driver calls and one or two database transactions.
#[derive(Debug)]
pub struct Snapshotter {
    driver: Box<dyn GraphDriver>,
    meta: Metadata,
    boot: String,
    lock: Mutex<()>,
    /// Set by [`close`](Self::close), under the lock.
    closed: AtomicBool,
}

/// This boot's id, as the layer store reads it (an unreadable or blank file is an error,
/// never an empty id that a later boot would match).
fn boot_id() -> Result<String> {
    graphdriver_kit::store::boot_id().map_err(|e| SnapshotError::Metadata {
        op: "read the boot id",
        source: Box::new(e),
    })
}

fn layer_id(key: &str, layer: &str) -> Result<LayerId> {
    LayerId::new(layer).map_err(|source| SnapshotError::Driver {
        key: key.to_owned(),
        layer: layer.to_owned(),
        source,
    })
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in labels {
        if k.len() + v.len() > MAX_LABEL_BYTES {
            return Err(SnapshotError::InvalidArgument(format!(
                "label {k:?} is longer than {MAX_LABEL_BYTES} bytes with its value"
            )));
        }
    }
    Ok(())
}

/// The labels containerd (2.0 and later) sets on a snapshot for a container in a user
/// namespace: `inside:outside:count` ranges, comma-separated.
pub const UIDMAP_LABEL: &str = "containerd.io/snapshot/uidmapping";
/// See [`UIDMAP_LABEL`].
pub const GIDMAP_LABEL: &str = "containerd.io/snapshot/gidmapping";

/// How a snapshot with these labels is mounted: idmapped when they carry a uid and a gid map
/// (both or neither).
fn mount_opts(labels: &BTreeMap<String, String>) -> Result<MountOpts> {
    let map = match (labels.get(UIDMAP_LABEL), labels.get(GIDMAP_LABEL)) {
        (None, None) => None,
        (Some(u), Some(g)) => {
            Some(IdMap::parse(u, g).map_err(|e| SnapshotError::InvalidArgument(e.to_string()))?)
        }
        _ => {
            return Err(SnapshotError::InvalidArgument(format!(
                "labels {UIDMAP_LABEL} and {GIDMAP_LABEL} go together"
            )))
        }
    };
    Ok(MountOpts {
        id_map: map,
        ..MountOpts::default()
    })
}

fn visible(r: &Record) -> bool {
    matches!(r.state, State::Ready | State::Releasing)
}

/// How a snapshot's layer is shown to containerd.
enum Shown {
    /// A mount containerd makes itself; the service holds nothing.
    Spec(MountSpec),
    /// The service's own mount of the layer, which containerd bind-mounts.
    Held(PathBuf),
}

fn spec_mount(spec: MountSpec) -> Vec<Mount> {
    vec![Mount {
        kind: spec.fs_type,
        source: spec.source,
        options: spec.options,
    }]
}

fn bind(kind: Kind, path: PathBuf) -> Vec<Mount> {
    let rw = if kind == Kind::View { "ro" } else { "rw" };
    vec![Mount {
        kind: "bind".into(),
        source: path,
        options: vec!["rbind".into(), rw.into()],
    }]
}

impl Snapshotter {
    /// Opens the snapshotter on `driver`, with its records in `dir`, and repairs what a crash
    /// left (see the module's doc). The driver's layers named `ctrd-N` are the service's.
    pub fn open(driver: Box<dyn GraphDriver>, dir: &Path) -> Result<Snapshotter> {
        std::fs::create_dir_all(dir).map_err(|e| SnapshotError::Metadata {
            op: "create the metadata directory",
            source: Box::new(e),
        })?;
        let s = Snapshotter {
            driver,
            meta: Metadata::open(&dir.join("snapshots.redb"))?,
            boot: boot_id()?,
            lock: Mutex::new(()),
            closed: AtomicBool::new(false),
        };
        s.recover()?;
        Ok(s)
    }

    /// The driver under the service.
    pub fn driver(&self) -> &dyn GraphDriver {
        self.driver.as_ref()
    }

    /// The operations' lock; refused once [`close`](Self::close) ran, so no operation
    /// touches the driver after it let go of its resources.
    fn lock(&self) -> Result<MutexGuard<'_, ()>> {
        // the guard protects no data of its own: a panicked holder left nothing half-done
        let g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.closed.load(Ordering::SeqCst) {
            return Err(SnapshotError::Closed);
        }
        Ok(g)
    }

    fn driver_err(key: &str, layer: &LayerId) -> impl FnOnce(DriverError) -> SnapshotError {
        let (key, layer) = (key.to_owned(), layer.to_string());
        move |source| SnapshotError::Driver { key, layer, source }
    }

    /// Drops every mount count of `layer` (the service's own, and extras a crash left).
    fn release(&self, layer: &LayerId) -> std::result::Result<(), DriverError> {
        for _ in 0..MAX_RELEASE {
            match self.driver.put(layer) {
                Ok(()) => continue,
                Err(DriverError::NotMounted(_)) | Err(DriverError::NotFound(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Releases and removes `layer`; one already gone is fine.
    fn discard(&self, layer: &LayerId) -> std::result::Result<(), DriverError> {
        self.release(layer)?;
        match self.driver.remove(layer) {
            Ok(()) | Err(DriverError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Finishes or rolls back interrupted operations, then sweeps layers no record names.
    /// A layer the driver cannot remove now (a mount leaked elsewhere) keeps its record's
    /// state and is tried again at the next open; it never stops the service.
    fn recover(&self) -> Result<()> {
        for (key, rec) in self.meta.all()? {
            let layer = layer_id(&key, &rec.layer)?;
            match rec.state {
                State::Ready => {}
                State::Creating | State::Removing => {
                    if self.discard(&layer).is_ok() {
                        self.meta.write("recover", |t| t.delete(&key))?;
                    }
                }
                State::Releasing => {
                    if self.release(&layer).is_ok() {
                        self.meta.write("recover", |t| {
                            if let Some(mut r) = t.get(&key)? {
                                r.state = State::Ready;
                                r.held = None;
                                t.put(&key, &r)?;
                            }
                            Ok(())
                        })?;
                    }
                }
            }
        }
        self.sweep()
    }

    /// Removes the service's layers that no record names, children before parents.
    fn sweep(&self) -> Result<()> {
        let named: HashSet<String> = self.meta.all()?.into_iter().map(|(_, r)| r.layer).collect();
        let list = self.driver.list().map_err(|source| SnapshotError::Driver {
            key: String::new(),
            layer: String::new(),
            source,
        })?;
        let mut strays: Vec<LayerId> = list
            .into_iter()
            .filter(|l| l.as_str().starts_with(LAYER_PREFIX) && !named.contains(l.as_str()))
            .collect();
        while !strays.is_empty() {
            let before = strays.len();
            strays.retain(|l| self.discard(l).is_err());
            if strays.len() == before {
                break; // the rest have children we cannot remove, or are busy: next time
            }
        }
        Ok(())
    }

    /// `Prepare` (an active snapshot) or `View` (a read-only one) of `key` on `parent`.
    pub fn prepare(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        if key.is_empty() {
            return Err(SnapshotError::InvalidArgument("empty snapshot key".into()));
        }
        check_labels(&labels)?;
        let opts = mount_opts(&labels)?;
        let _g = self.lock()?;
        let now = SystemTime::now();
        let (layer, parent_layer) = self.meta.write("prepare", |t| {
            if t.get(key)?.is_some() {
                return Err(SnapshotError::AlreadyExists(key.to_owned()));
            }
            let parent_layer = match parent {
                None => None,
                Some(p) => match t.get(p)? {
                    Some(r) if visible(&r) && r.kind == Kind::Committed => Some(r.layer),
                    Some(r) if visible(&r) => {
                        return Err(SnapshotError::InvalidArgument(format!(
                            "parent {p} is not a committed snapshot (it is {})",
                            r.kind.as_str()
                        )))
                    }
                    _ => return Err(SnapshotError::NotFound(p.to_owned())),
                },
            };
            let layer = format!("{LAYER_PREFIX}{}", t.next_layer()?);
            t.put(
                key,
                &Record {
                    layer: layer.clone(),
                    kind,
                    parent: parent.map(str::to_owned),
                    labels,
                    created: now,
                    updated: now,
                    state: State::Creating,
                    held: None,
                    usage: None,
                },
            )?;
            Ok((layer, parent_layer))
        })?;
        failpoint::hit("snapshotter.prepare.after-record");
        let id = layer_id(key, &layer)?;
        let parent_id = parent_layer.map(|p| layer_id(key, &p)).transpose()?;
        let made = self
            .driver
            .create(
                &id,
                parent_id.as_ref(),
                &CreateOpts {
                    read_write: kind == Kind::Active,
                    ..CreateOpts::default()
                },
            )
            .and_then(|()| {
                failpoint::hit("snapshotter.prepare.after-create");
                self.show(kind, &id, &opts)
            });
        let shown = match made {
            Ok(shown) => shown,
            Err(e) => {
                // roll back; what cannot be undone now is undone at the next open
                if self.discard(&id).is_ok() {
                    self.meta.write("roll back prepare", |t| t.delete(key))?;
                }
                return Err(Self::driver_err(key, &id)(e));
            }
        };
        failpoint::hit("snapshotter.prepare.after-mount");
        self.meta.write("prepare", |t| {
            let mut r = t
                .get(key)?
                .ok_or_else(|| SnapshotError::NotFound(key.to_owned()))?;
            r.state = State::Ready;
            r.held = match &shown {
                Shown::Held(path) => Some(Held {
                    boot: self.boot.clone(),
                    path: path.clone(),
                }),
                Shown::Spec(_) => None,
            };
            t.put(key, &r)
        })?;
        Ok(match shown {
            Shown::Spec(spec) => spec_mount(spec),
            Shown::Held(path) => bind(kind, path),
        })
    }

    /// Shows a new snapshot's layer: the driver's one-call mount for an active snapshot
    /// when it has one, else the service's own mount (always for an idmapped one: the
    /// idmapped layers of an overlay are no `mount(2)` options containerd 1.x can make).
    fn show(
        &self,
        kind: Kind,
        id: &LayerId,
        opts: &MountOpts,
    ) -> std::result::Result<Shown, DriverError> {
        if kind == Kind::Active && opts.id_map.is_none() {
            if let Some(spec) = self.driver.mount_spec(id)? {
                return Ok(Shown::Spec(spec));
            }
        }
        self.driver.get(id, opts).map(Shown::Held)
    }

    /// `Mounts` of an active snapshot or a view.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let _g = self.lock()?;
        let rec = self.visible(key)?;
        if rec.kind == Kind::Committed {
            return Err(SnapshotError::FailedPrecondition {
                key: key.to_owned(),
                reason: "a committed snapshot has no mounts".into(),
            });
        }
        let kind = rec.kind;
        let held_now = rec.held.as_ref().is_some_and(|h| h.boot == self.boot);
        let mapped = mount_opts(&rec.labels)?.id_map.is_some();
        if kind == Kind::Active && !held_now && !mapped {
            let id = layer_id(key, &rec.layer)?;
            if let Some(spec) = self
                .driver
                .mount_spec(&id)
                .map_err(Self::driver_err(key, &id))?
            {
                return Ok(spec_mount(spec));
            }
        }
        let path = self.hold(key, rec)?;
        Ok(bind(kind, path))
    }

    /// The path of the service's mount of `key`, taken again when the record's hold is from
    /// an earlier boot.
    fn hold(&self, key: &str, rec: Record) -> Result<PathBuf> {
        if let Some(h) = rec.held.as_ref().filter(|h| h.boot == self.boot) {
            return Ok(h.path.clone());
        }
        let id = layer_id(key, &rec.layer)?;
        let path = self
            .driver
            .get(&id, &mount_opts(&rec.labels)?)
            .map_err(Self::driver_err(key, &id))?;
        self.meta.write("mount", |t| {
            let mut r = t
                .get(key)?
                .ok_or_else(|| SnapshotError::NotFound(key.to_owned()))?;
            r.held = Some(Held {
                boot: self.boot.clone(),
                path: path.clone(),
            });
            t.put(key, &r)
        })?;
        Ok(path)
    }

    fn visible(&self, key: &str) -> Result<Record> {
        match self.meta.get(key)? {
            Some(r) if visible(&r) => Ok(r),
            _ => Err(SnapshotError::NotFound(key.to_owned())),
        }
    }

    /// What a snapshot's layer holds itself: disk bytes from the backend's own account
    /// where it keeps one ([`GraphDriver::disk_usage`]: zfs, devmapper, btrfs with qgroups),
    /// else file bytes from the driver's `diff_size`; and the entries its change list adds
    /// or modifies.
    fn measure(&self, key: &str, layer: &LayerId) -> Result<Usage> {
        let size = match self
            .driver
            .disk_usage(layer)
            .map_err(Self::driver_err(key, layer))?
        {
            Some(bytes) => bytes,
            None => self
                .driver
                .diff_size(layer, None)
                .map_err(Self::driver_err(key, layer))?,
        };
        let inodes = self
            .driver
            .changes(layer, None)
            .map_err(Self::driver_err(key, layer))?
            .iter()
            .filter(|c| c.kind != graphdriver_api::ChangeKind::Deleted)
            .count() as u64;
        Ok(Usage { size, inodes })
    }

    /// `Commit`: the active snapshot `key` becomes committed snapshot `name`, with `labels`.
    /// No data moves: the layer stays and is unmounted; only its record changes.
    ///
    /// The layer is unmounted while `key` is still active (its record first forgets the
    /// mount, so a later `Mounts` takes it again), and one transaction then turns `key`
    /// into `name`: a crash before that transaction leaves `key` active, as the caller
    /// (containerd rolls its own record back when the call fails) still believes it is.
    /// Only a crash between that transaction and the reply leaves the two apart.
    pub fn commit(&self, name: &str, key: &str, labels: BTreeMap<String, String>) -> Result<()> {
        if name.is_empty() {
            return Err(SnapshotError::InvalidArgument("empty snapshot name".into()));
        }
        check_labels(&labels)?;
        let _g = self.lock()?;
        let rec = self.visible(key)?;
        if rec.kind != Kind::Active {
            return Err(SnapshotError::FailedPrecondition {
                key: key.to_owned(),
                reason: format!(
                    "only an active snapshot can be committed (it is {})",
                    rec.kind.as_str()
                ),
            });
        }
        if self.meta.get(name)?.is_some() {
            return Err(SnapshotError::AlreadyExists(name.to_owned()));
        }
        let id = layer_id(key, &rec.layer)?;
        if rec.held.is_some() {
            self.meta.write("commit", |t| {
                let mut r = t
                    .get(key)?
                    .ok_or_else(|| SnapshotError::NotFound(key.to_owned()))?;
                r.held = None;
                t.put(key, &r)
            })?;
        }
        failpoint::hit("snapshotter.commit.after-unhold");
        self.release(&id).map_err(Self::driver_err(key, &id))?;
        failpoint::hit("snapshotter.commit.after-release");
        let now = SystemTime::now();
        self.meta.write("commit", |t| {
            if t.get(name)?.is_some() {
                return Err(SnapshotError::AlreadyExists(name.to_owned()));
            }
            t.delete(key)?;
            t.put(
                name,
                &Record {
                    kind: Kind::Committed,
                    labels,
                    created: now,
                    updated: now,
                    state: State::Ready,
                    held: None,
                    // measured by the first `Usage` (the layer no longer changes), so a
                    // commit takes the same time whatever the snapshot holds
                    usage: None,
                    ..rec
                },
            )
        })
    }

    /// `Remove`: fails with `FailedPrecondition` while the snapshot has children.
    pub fn remove(&self, key: &str) -> Result<()> {
        let _g = self.lock()?;
        let rec = self.visible(key)?;
        let id = layer_id(key, &rec.layer)?;
        self.meta.write("remove", |t| {
            if t.has_children(key)? {
                return Err(SnapshotError::FailedPrecondition {
                    key: key.to_owned(),
                    reason: "cannot remove a snapshot that has children".into(),
                });
            }
            let mut r = rec.clone();
            r.state = State::Removing;
            t.put(key, &r)
        })?;
        failpoint::hit("snapshotter.remove.after-record");
        let removed = self.release(&id).and_then(|()| {
            failpoint::hit("snapshotter.remove.after-release");
            match self.driver.remove(&id) {
                Ok(()) | Err(DriverError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            }
        });
        match removed {
            Ok(()) => {
                failpoint::hit("snapshotter.remove.after-discard");
                self.meta.write("remove", |t| t.delete(key))
            }
            Err(e) => {
                // back as it was, without the hold it may have lost
                self.meta.write("roll back remove", |t| {
                    t.put(
                        key,
                        &Record {
                            held: None,
                            ..rec.clone()
                        },
                    )
                })?;
                Err(Self::driver_err(key, &id)(e))
            }
        }
    }

    /// `Stat`.
    pub fn stat(&self, key: &str) -> Result<Info> {
        Ok(self.visible(key)?.info(key))
    }

    /// `Update`: the labels named by `paths` (`labels` for all of them, `labels.KEY` for
    /// one; no paths: every mutable field, which is the labels) take their values from
    /// `info`.
    pub fn update(&self, info: &Info, paths: &[String]) -> Result<Info> {
        let _g = self.lock()?;
        let key = info.name.as_str();
        let mut rec = self.visible(key)?;
        if paths.is_empty() {
            rec.labels = info.labels.clone();
        }
        for p in paths {
            if p == "labels" {
                rec.labels = info.labels.clone();
            } else if let Some(k) = p.strip_prefix("labels.") {
                match info.labels.get(k) {
                    Some(v) => rec.labels.insert(k.to_owned(), v.clone()),
                    None => rec.labels.remove(k),
                };
            } else {
                return Err(SnapshotError::InvalidArgument(format!(
                    "cannot update field {p:?} of snapshot {key}"
                )));
            }
        }
        check_labels(&rec.labels)?;
        rec.updated = SystemTime::now();
        self.meta.write("update", |t| t.put(key, &rec))?;
        Ok(rec.info(key))
    }

    /// `List` (containerd's `Walk`): the snapshots that pass any of `filters`.
    pub fn list(&self, filters: &[String]) -> Result<Vec<Info>> {
        let filters = filters
            .iter()
            .map(|f| Filter::parse(f))
            .collect::<Result<Vec<_>>>()?;
        Ok(self
            .meta
            .all()?
            .into_iter()
            .filter(|(_, r)| visible(r))
            .map(|(k, r)| r.info(&k))
            .filter(|i| filter::any_matches(&filters, i))
            .collect())
    }

    /// `Usage`: an active snapshot's, now; a committed one's, measured once (by the first
    /// `Usage` after the commit) and kept in its record.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        if let Some(u) = self.visible(key)?.usage {
            return Ok(u);
        }
        // measuring may mount the layer (the walk of a change list): not beside a Remove or
        // Commit of it, whose release takes every mount count
        let _g = self.lock()?;
        let rec = self.visible(key)?;
        if let Some(u) = rec.usage {
            return Ok(u);
        }
        let usage = self.measure(key, &layer_id(key, &rec.layer)?)?;
        if rec.kind == Kind::Committed {
            // the same snapshot still (a remove and a new commit under the same name in
            // between would have another layer): keep the figure
            self.meta.write("usage", |t| match t.get(key)? {
                Some(mut r) if r.layer == rec.layer && r.usage.is_none() => {
                    r.usage = Some(usage);
                    t.put(key, &r)
                }
                _ => Ok(()),
            })?;
        }
        Ok(usage)
    }

    /// Stops the service's use of the driver: when no snapshot holds a mount this boot,
    /// the driver releases its kernel resources ([`GraphDriver::cleanup`]: devmapper's pool
    /// and its loop devices, btrfs's loopback filesystem), so a stopped service leaves
    /// nothing behind. Mounts that snapshots hold are kept, for the containers running on
    /// them and for the next start, which takes them over; it returns how many there are.
    /// Operations that touch the driver fail with [`SnapshotError::Closed`] afterwards (an
    /// operation in progress finishes first); a second `close` too.
    pub fn close(&self) -> Result<usize> {
        let _g = self.lock()?;
        self.closed.store(true, Ordering::SeqCst);
        let held = self
            .meta
            .all()?
            .into_iter()
            .filter(|(_, r)| r.held.as_ref().is_some_and(|h| h.boot == self.boot))
            .count();
        if held == 0 {
            self.driver
                .cleanup()
                .map_err(|source| SnapshotError::Driver {
                    key: String::new(),
                    layer: String::new(),
                    source,
                })?;
        }
        Ok(held)
    }

    /// `Cleanup`: removes the service's layers that no snapshot names.
    pub fn cleanup(&self) -> Result<()> {
        let _g = self.lock()?;
        self.sweep()
    }
}
