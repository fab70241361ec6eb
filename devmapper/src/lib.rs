//! The devmapper graph driver: every layer is a thin device in a device-mapper thin pool, and
//! a child is a thin snapshot of its parent, made in constant time whatever the parent holds,
//! with block-level copy-on-write and a hard size per layer.
//!
//! # The pool
//! `dm.thinpooldev=NAME` names an existing thin pool (`/dev/mapper/NAME`), which this driver
//! then owns alone. Without it the driver makes one on two sparse loopback files,
//! `<root>/devicemapper/pool/{data,metadata}` (`dm.loopdatasize`, default 100G;
//! `dm.loopmetadatasize`, default 2G): this is for tests and demos, like docker's loop-lvm.
//! The loop devices detach themselves when the pool goes; `cleanup` takes the loopback pool
//! down when nothing of it is in use, and the next operation brings it back.
//!
//! # Devices
//! A base thin device (`dm.basesize`, default 10G) gets the filesystem (`dm.fs=ext4|xfs`,
//! default ext4; xfs is mounted `nouuid`, since every snapshot has its origin's UUID), made
//! once with `mkfs` and emptied to a bare `0755 root:root` root. A layer without a parent is a
//! snapshot of the base, a child a snapshot of its parent; an origin that is live is
//! suspended (its filesystem frozen) around the snapshot. A size limit of at least the base
//! size grows the new device and then its filesystem (the in-kernel online grow ioctls);
//! writes past it fail with `ENOSPC`. A smaller limit is refused.
//!
//! Layer `id` is mounted at `<root>/devicemapper/mnt/<id>` (read-only while it has
//! children); its device is activated for the mount and deactivated after. A deactivated
//! device nothing holds is kept as a spare (up to four, renamed, its table swapped for an
//! `error` one that lets go of the thin device) for the next activation to take over: adding
//! a block device to the system and taking it away are the dearest steps of both. Spares go
//! at open and at `cleanup`. Every
//! device-mapper step is an ioctl on `/dev/mapper/control` (`sys.rs`): no libdevmapper, no
//! `dmsetup` per operation, no udev (this module makes the `/dev/mapper` nodes itself).
//!
//! # Crash safety
//! `metadata.json` ([`metadata`]) maps layers to device ids and holds the transaction id the
//! pool should have. Making a device writes the id as pending first, then changes the pool,
//! then commits with the pool's transaction id advanced; deleting moves the id to a deleting
//! list first. At open, pending ids are deleted from the pool (the layer store then rolls the
//! half-made layer back), deletions owed are retried and the pool's transaction id is
//! realigned; devices found in the pool that the metadata does not know (probed by id) are
//! listed by `status` and deleted by `cleanup`.
//!
//! # Busy devices
//! Unmounting detaches; a device still open (a mount leaked into another namespace) gets a
//! deferred removal, which the kernel finishes at its last close, and its deletion from the
//! pool is retried at later operations: `remove` never fails for that reason. `status`
//! counts both.

mod dm;
pub mod error;
mod filesystem;
mod loopback;
pub mod metadata;
mod pool;
mod pool_status;
mod sectors;
mod sys;
mod target;
mod trace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use graphdriver_api::{CreateOpts, DriverError, IoContext, LayerId, Result, Status};
use graphdriver_kit::archive::ApplyTarget;
use graphdriver_kit::fs::layer_mount;
use graphdriver_kit::fs::mountinfo::MountTable;
use graphdriver_kit::options::{DriverOptions, OptionParser, StoreOptions};
use graphdriver_kit::store::{Backend, LayerStore};

pub use error::DevmapperError;
pub use filesystem::Fs;
use metadata::{BaseDevice, Metadata, MetadataFile, ThinDevice, BASE_KEY};
use pool::{Deleted, Pool, PoolSource};
pub use sectors::{Bytes, Sectors};
use trace::Trace;

/// The devmapper driver: the shared layer store over [`Devmapper`].
pub type DevmapperDriver = LayerStore<Devmapper>;

/// The name errors give this driver.
const DRIVER: &str = "devmapper";

/// devmapper's options (`--opt key=value`, docker's `dm.*` names).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DevmapperOptions {
    /// `dm.thinpooldev`: a thin pool the user made (`/dev/mapper/` optional); default: one on
    /// loopback files under the root.
    pub thinpooldev: Option<String>,
    /// `dm.fs=ext4|xfs`: the filesystem of the base device (default: ext4).
    pub fs: Option<Fs>,
    /// `dm.basesize`: each layer's device size (default 10G; at least 64M, a multiple of 512).
    pub base_size: u64,
    /// `dm.loopdatasize`: the loopback pool's data file (default 100G, sparse).
    pub loop_data_size: u64,
    /// `dm.loopmetadatasize`: the loopback pool's metadata file (default 2G, sparse).
    pub loop_metadata_size: u64,
    /// `dm.blocksize`: the pool's block size (default 64K; a multiple of 64K up to 1G).
    pub block_size: u64,
    /// The layer store's (`store.*`, see [`graphdriver_kit::options`]).
    pub store: StoreOptions,
}

impl Default for DevmapperOptions {
    fn default() -> Self {
        DevmapperOptions {
            thinpooldev: None,
            fs: None,
            base_size: 10 << 30,
            loop_data_size: 100 << 30,
            loop_metadata_size: 2 << 30,
            block_size: 64 << 10,
            store: StoreOptions::default(),
        }
    }
}

impl DriverOptions for DevmapperOptions {
    const DRIVER: &'static str = DRIVER;

    fn set(&mut self, p: &OptionParser<'_>, key: &str, value: &str) -> Result<bool> {
        match key {
            "dm.thinpooldev" => {
                self.thinpooldev = Some(value.trim_start_matches("/dev/mapper/").to_owned())
            }
            "dm.fs" => {
                self.fs = Some(
                    Fs::parse(value)
                        .ok_or_else(|| p.unsupported(format!("dm.fs={value}: want ext4 or xfs")))?,
                )
            }
            "dm.basesize" => self.base_size = p.size(key, value)?,
            "dm.loopdatasize" => self.loop_data_size = p.size(key, value)?,
            "dm.loopmetadatasize" => self.loop_metadata_size = p.size(key, value)?,
            "dm.blocksize" => self.block_size = p.size(key, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn store_mut(&mut self) -> &mut StoreOptions {
        &mut self.store
    }

    fn check(&self) -> Result<()> {
        if self.block_size < 64 << 10
            || !self.block_size.is_multiple_of(64 << 10)
            || self.block_size > 1 << 30
        {
            return Err(DriverError::unsupported(
                DRIVER,
                "dm.blocksize must be a multiple of 64K between 64K and 1G",
            ));
        }
        if self.base_size < 64 << 20 || !self.base_size.is_multiple_of(512) {
            return Err(DriverError::unsupported(
                DRIVER,
                "dm.basesize must be at least 64M and a multiple of 512",
            ));
        }
        Ok(())
    }
}

graphdriver_kit::driver_options!(DevmapperOptions);

/// Opens (creating if needed) the devmapper driver under `root`: its pool, base device and
/// metadata, after repairing what a crash left.
pub fn open(root: &Path, opts: &BTreeMap<String, String>) -> Result<DevmapperDriver> {
    open_with(root, &DevmapperOptions::try_from(opts)?)
}

/// [`open`] with typed options.
pub fn open_with(root: &Path, o: &DevmapperOptions) -> Result<DevmapperDriver> {
    o.check()?; // the fields are public: a struct made by hand is checked too
    std::fs::create_dir_all(root).ctx("create directory", root)?;
    let root = &root.canonicalize().ctx("resolve", root)?;
    let home = root.join("devicemapper");
    for d in [home.clone(), home.join("mnt"), home.join("pool")] {
        std::fs::create_dir_all(&d).ctx("create directory", &d)?;
    }
    // Names unique to this home, stable across processes (docker's scheme).
    let st = rustix::fs::stat(&home).ctx("stat", &home)?;
    let prefix = format!("graphdriver-{:x}-{}", st.st_dev, st.st_ino);
    let (name, source) = match &o.thinpooldev {
        Some(n) => (n.clone(), PoolSource::User),
        None => (
            format!("{prefix}-pool"),
            PoolSource::Loopback {
                data: home.join("pool/data"),
                metadata: home.join("pool/metadata"),
                data_size: o.loop_data_size,
                metadata_size: o.loop_metadata_size,
            },
        ),
    };
    let pool = Pool::new(name, prefix, source, Bytes(o.block_size)).map_err(|e| match e {
        DriverError::Backend(b) => DriverError::unsupported(
            DRIVER,
            format!(
                "{b}: {}",
                std::error::Error::source(&*b)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            ),
        ),
        other => other,
    })?;
    let backend = Devmapper {
        meta: MetadataFile::new(&home),
        home: home.clone(),
        pool,
        fs_opt: o.fs,
        base_size: Bytes(o.base_size),
    };
    {
        let _lock = backend.meta.lock()?;
        backend.pool.ensure_active()?;
        let mut meta = backend.meta.load()?;
        backend.recover(&mut meta)?;
        backend.ensure_base(&mut meta)?;
    }
    LayerStore::open_with(&home, backend, o.store.clone())
}

/// The devmapper backend.
#[derive(Debug)]
pub struct Devmapper {
    home: PathBuf,
    meta: MetadataFile,
    pool: Pool,
    fs_opt: Option<Fs>,
    base_size: Bytes,
}

impl Devmapper {
    fn mnt(&self, id: &LayerId) -> PathBuf {
        self.home.join("mnt").join(id.as_str())
    }

    /// Brings the pool back if `cleanup` took it down.
    fn pool_up(&self) -> Result<()> {
        if self
            .pool
            .dm()
            .info(&self.pool.name)
            .map_err(DriverError::from)?
            .is_some_and(|i| i.active)
        {
            return Ok(());
        }
        let _lock = self.meta.lock()?;
        self.pool.ensure_active()
    }

    /// Advances the pool's transaction id and commits `meta` with it: the commit point of a
    /// step that changed the pool.
    fn commit(&self, meta: &mut Metadata) -> Result<()> {
        // After recovery the pool has the metadata's transaction id; ask the pool only when
        // that is not so (the pool refuses an old id that is not its own).
        let mut current = meta.transaction_id;
        if self.pool.set_transaction_id(current, current + 1).is_err() {
            current = self.pool.status()?.transaction_id;
            self.pool.set_transaction_id(current, current + 1)?;
        }
        meta.transaction_id = current + 1;
        self.meta.save(meta)
    }

    /// Undoes or finishes what a crash left (metadata lock held).
    fn recover(&self, meta: &mut Metadata) -> Result<()> {
        // a crash while a device became a spare can leave one holding its thin device
        self.pool.drop_spares()?;
        let pool_tid = self.pool.status()?.transaction_id;
        let mut changed = pool_tid != meta.transaction_id;
        // devices being made: they may be in the pool; no layer owns them
        let pending: Vec<(String, u32)> = std::mem::take(&mut meta.pending).into_iter().collect();
        for (_, id) in pending {
            self.pool.deactivate_thin(id)?;
            meta.deleting.push(id);
            changed = true;
        }
        // live devices of ours the metadata does not know (a crash while one was active)
        let known = meta.known_ids();
        for (id, info) in self.pool.live_thins()? {
            if known.binary_search(&id).is_err() && info.open_count == 0 {
                self.pool.deactivate_thin(id)?;
            }
        }
        if changed {
            self.meta.save(meta)?;
        }
        self.retry_deletions(meta, changed)
    }

    /// Deletes from the pool the devices owed (their deferred removal done); commits when
    /// something changed or `force`.
    fn retry_deletions(&self, meta: &mut Metadata, force: bool) -> Result<()> {
        let mut changed = force;
        let mut still = Vec::new();
        for id in std::mem::take(&mut meta.deleting) {
            if let Some(info) = self
                .pool
                .dm()
                .info(&self.pool.thin_name(id))
                .map_err(DriverError::from)?
            {
                if info.open_count > 0 {
                    still.push(id);
                    continue;
                }
                self.pool.deactivate_thin(id)?;
            }
            match self.pool.delete(id)? {
                Deleted::Gone => changed = true,
                Deleted::Busy => still.push(id),
            }
        }
        meta.deleting = still;
        if changed {
            self.commit(meta)?;
        }
        Ok(())
    }

    /// Makes the base device with its filesystem, once (metadata lock held).
    fn ensure_base(&self, meta: &mut Metadata) -> Result<()> {
        if let Some(base) = &meta.base {
            if let Some(fs) = self.fs_opt {
                if fs.name() != base.fs {
                    return Err(DriverError::unsupported(
                        DRIVER,
                        format!(
                            "dm.fs={} but the base device of this root has {}",
                            fs.name(),
                            base.fs
                        ),
                    ));
                }
            }
            return Ok(());
        }
        self.pool.check_writable()?;
        let fs = self.fs_opt.unwrap_or(Fs::Ext4);
        let id = meta.allocate().map_err(DriverError::from)?;
        meta.pending.insert(BASE_KEY.to_owned(), id);
        self.meta.save(meta)?;
        self.pool.create_thin(id)?;
        let made: Result<()> = (|| {
            let node = self.pool.activate(id, self.base_size)?;
            fs.make(&node)?;
            let mnt = self.home.join("mnt").join(".base");
            layer_mount::make_mount_point(&mnt)?;
            fs.mount(&node, &mnt, false)?;
            let emptied = (|| {
                // the layer root is the filesystem's root: bare, 0755 root:root
                let lost = mnt.join("lost+found");
                if lost.exists() {
                    std::fs::remove_dir(&lost).ctx("remove", &lost)?;
                }
                rustix::fs::chmod(&mnt, rustix::fs::Mode::from_raw_mode(0o755))
                    .ctx("change mode of", &mnt)?;
                rustix::fs::chown(
                    &mnt,
                    Some(rustix::fs::Uid::ROOT),
                    Some(rustix::fs::Gid::ROOT),
                )
                .ctx("change owner of", &mnt)
            })();
            let unmounted = filesystem::unmount(&mnt);
            // an empty directory left behind is harmless: the next base creation reuses it
            let _ = std::fs::remove_dir(&mnt);
            emptied?;
            unmounted?;
            self.pool.deactivate_thin(id)?;
            Ok(())
        })();
        if let Err(e) = made {
            let deactivated = self.pool.deactivate_thin(id);
            let deleted = self.pool.delete(id);
            meta.pending.remove(BASE_KEY);
            let saved = self.meta.save(meta);
            return Err(e
                .with_rollback(deactivated)
                .with_rollback(deleted)
                .with_rollback(saved));
        }
        meta.pending.remove(BASE_KEY);
        meta.base = Some(BaseDevice {
            device: ThinDevice {
                device_id: id,
                size: self.base_size,
            },
            fs: fs.name().to_owned(),
        });
        self.commit(meta)
    }

    fn base(&self, meta: &Metadata) -> Result<BaseDevice> {
        meta.base.clone().ok_or_else(|| {
            DriverError::unsupported(DRIVER, "the base device is missing from the metadata")
        })
    }

    fn device(&self, meta: &Metadata, id: &LayerId) -> Result<ThinDevice> {
        meta.devices
            .get(id.as_str())
            .copied()
            .ok_or_else(|| DriverError::Corrupt {
                path: self.home.join("metadata.json"),
                reason: format!("layer {id} has no thin device"),
            })
    }

    fn fs(&self, meta: &Metadata) -> Result<Fs> {
        let base = self.base(meta)?;
        Fs::parse(&base.fs).ok_or_else(|| {
            DriverError::unsupported(DRIVER, format!("unknown filesystem {}", base.fs))
        })
    }

    /// Activates `id`'s device and mounts it at its mount point (unless it is mounted).
    fn mount_layer(&self, id: &LayerId, read_only: bool) -> Result<()> {
        let mut t = Trace::start("mount");
        self.pool_up()?;
        let meta = self.meta.load()?;
        let dev = self.device(&meta, id)?;
        let fs = self.fs(&meta)?;
        let mnt = self.mnt(id);
        if MountTable::read()?.contains(&mnt) {
            return Ok(());
        }
        t.step("metadata");
        let node = self.pool.activate(dev.device_id, dev.size)?;
        t.step("activate");
        layer_mount::make_mount_point(&mnt)?;
        if let Err(e) = fs.mount(&node, &mnt, read_only) {
            let unmounted = filesystem::unmount(&mnt);
            let deactivated = self.pool.deactivate_thin(dev.device_id);
            return Err(e.with_rollback(unmounted).with_rollback(deactivated));
        }
        t.step("mount");
        Ok(())
    }

    /// Bytes thin device of `id` maps (its own and those shared with its origin).
    pub fn usage(&self, id: &LayerId) -> Result<u64> {
        self.pool_up()?;
        let meta = self.meta.load()?;
        let dev = self.device(&meta, id)?;
        let name = self.pool.thin_name(dev.device_id);
        let was_live = self
            .pool
            .dm()
            .info(&name)
            .map_err(DriverError::from)?
            .is_some();
        if !was_live {
            self.pool.activate(dev.device_id, dev.size)?;
        }
        let bytes = self.pool.mapped_bytes(dev.device_id).map(|b| b.0);
        if !was_live {
            self.pool.deactivate_thin(dev.device_id)?;
        }
        bytes
    }

    /// Thin device ids in the pool that the metadata does not know: probed from 0 to a
    /// little past the highest id ever handed out.
    pub fn unknown_devices(&self) -> Result<Vec<u32>> {
        self.pool_up()?;
        let meta = self.meta.load()?;
        let known = meta.known_ids();
        let top = known
            .last()
            .copied()
            .unwrap_or(0)
            .max(meta.next_device_id)
            .saturating_add(16)
            .min(metadata::MAX_DEVICE_ID);
        let mut out = Vec::new();
        for id in 0..=top {
            if known.binary_search(&id).is_err() && self.pool.thin_exists(id)? {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Device ids owned by layers, by layer.
    pub fn devices(&self) -> Result<BTreeMap<String, u32>> {
        let meta = self.meta.load()?;
        Ok(meta
            .devices
            .iter()
            .map(|(k, v)| (k.clone(), v.device_id))
            .collect())
    }

    /// The idle device-mapper devices kept for the next activations, by name.
    pub fn spare_devices(&self) -> Result<Vec<String>> {
        self.pool.spares()
    }

    /// Live device-mapper devices of this driver (thin devices, not the pool), by id.
    pub fn live_devices(&self) -> Result<Vec<u32>> {
        Ok(self
            .pool
            .live_thins()?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    fn human(bytes: u64) -> String {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = bytes as f64;
        let mut u = 0;
        while v >= 1024.0 && u < UNITS.len() - 1 {
            v /= 1024.0;
            u += 1;
        }
        format!("{v:.1} {}", UNITS[u])
    }
}

impl Backend for Devmapper {
    fn name(&self) -> &'static str {
        "devmapper"
    }

    /// The bytes the thin device maps.
    fn disk_usage(&self, id: &LayerId, _has_children: bool) -> Result<Option<u64>> {
        self.usage(id).map(Some)
    }

    fn make(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<BTreeMap<String, String>> {
        let mut t = Trace::start("create");
        self.pool_up()?;
        let _lock = self.meta.lock()?;
        let mut meta = self.meta.load()?;
        self.retry_deletions(&mut meta, false)?;
        self.pool.check_writable()?;
        t.step("check");
        let base = self.base(&meta)?;
        let origin = match parent {
            Some(p) => self.device(&meta, p)?,
            None => base.device,
        };
        let size = match opts.size_limit.map(Bytes) {
            Some(limit) if limit < base.device.size => {
                return Err(DriverError::unsupported(
                    DRIVER,
                    format!(
                        "a size limit of {} bytes is below the base device's {} (dm.basesize)",
                        limit.0, base.device.size.0
                    ),
                ))
            }
            Some(limit) => origin.size.max(limit.round_up_to_sector()),
            None => origin.size,
        };
        let dev_id = meta.allocate().map_err(DriverError::from)?;
        meta.pending.insert(id.as_str().to_owned(), dev_id);
        // not flushed: a process crash keeps it; after a power loss that took it, the
        // snapshot is a device the metadata does not know (status lists it, cleanup deletes it)
        self.meta.save_unflushed(&meta)?;
        t.step("pending");
        self.pool.snapshot(dev_id, origin.device_id)?;
        t.step("snapshot");
        graphdriver_kit::failpoint::hit("devmapper.after-snapshot");
        meta.pending.remove(id.as_str());
        meta.devices.insert(
            id.as_str().to_owned(),
            ThinDevice {
                device_id: dev_id,
                size: origin.size,
            },
        );
        self.commit(&mut meta)?;
        t.step("commit");
        if size > origin.size {
            // grow the device, then its filesystem, online; the store's journal rolls the
            // layer back if this fails or the process dies
            let fs = self.fs(&meta)?;
            let mnt = self.mnt(id);
            let node = self.pool.activate(dev_id, size)?;
            self.pool.grow(dev_id, size)?;
            layer_mount::make_mount_point(&mnt)?;
            fs.mount(&node, &mnt, false)?;
            let grown = fs.grow(&mnt, size);
            let unmounted = filesystem::unmount(&mnt);
            // an empty mount point left behind is harmless: the layer's next get uses it
            let _ = std::fs::remove_dir(&mnt);
            self.pool.deactivate_thin(dev_id)?;
            grown?;
            unmounted?;
            if let Some(d) = meta.devices.get_mut(id.as_str()) {
                d.size = size;
            }
            self.meta.save(&meta)?;
        }
        Ok(BTreeMap::from([
            ("device_id".to_owned(), dev_id.to_string()),
            ("device_size".to_owned(), size.0.to_string()),
        ]))
    }

    fn destroy(&self, id: &LayerId) -> Result<()> {
        let mnt = self.mnt(id);
        layer_mount::unmount_and_remove(&mnt)?;
        self.pool_up()?;
        let _lock = self.meta.lock()?;
        let mut meta = self.meta.load()?;
        let dev_id = match (
            meta.devices.remove(id.as_str()),
            meta.pending.remove(id.as_str()),
        ) {
            (Some(d), _) => d.device_id,
            (None, Some(p)) => p,
            (None, None) => return self.retry_deletions(&mut meta, false),
        };
        // from here the device belongs to no layer; its deletion is owed until done
        meta.deleting.push(dev_id);
        self.meta.save(&meta)?;
        self.pool.deactivate_thin(dev_id)?;
        self.retry_deletions(&mut meta, false)
    }

    fn mount_point(&self, id: &LayerId) -> PathBuf {
        self.mnt(id)
    }

    fn mount(
        &self,
        id: &LayerId,
        _ancestors: &[LayerId],
        read_only: bool,
        _idmap: Option<&graphdriver_kit::idmap::UserNs>,
    ) -> Result<()> {
        self.mount_layer(id, read_only)
    }

    fn unmount(&self, id: &LayerId) -> Result<()> {
        let mut t = Trace::start("unmount");
        let mnt = self.mnt(id);
        layer_mount::unmount_and_remove(&mnt)?;
        t.step("unmount");
        let meta = self.meta.load()?;
        if let Some(dev) = meta.devices.get(id.as_str()) {
            // deferred when a leaked mount still holds it
            self.pool.deactivate_thin(dev.device_id)?;
        }
        t.step("deactivate");
        Ok(())
    }

    fn apply_target(&self, id: &LayerId, _ancestors: &[LayerId]) -> Result<ApplyTarget> {
        self.mount_layer(id, false)?;
        let mnt = self.mnt(id);
        // renames cannot leave the filesystem: stage inside it (the name is reserved)
        Ok(ApplyTarget {
            dir: mnt.clone(),
            staging_parent: mnt,
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
        let meta = self.meta.load()?;
        Ok(meta
            .devices
            .keys()
            .filter_map(|k| LayerId::new(k).ok())
            .collect())
    }

    fn cleanup(&self) -> Result<()> {
        self.pool_up()?;
        let unknown = self.unknown_devices()?;
        let _lock = self.meta.lock()?;
        let mut meta = self.meta.load()?;
        for id in unknown {
            self.pool.deactivate_thin(id)?;
            if self.pool.delete(id)? == Deleted::Busy {
                meta.deleting.push(id);
            }
        }
        self.retry_deletions(&mut meta, false)?;
        // devices nobody mounts go down; the loopback pool too when nothing holds it
        let table = MountTable::read()?;
        let mounted: Vec<u32> = meta
            .devices
            .iter()
            .filter(|(k, _)| table.contains(&self.home.join("mnt").join(k)))
            .map(|(_, d)| d.device_id)
            .collect();
        for (id, info) in self.pool.live_thins()? {
            if !mounted.contains(&id) && info.open_count == 0 {
                self.pool.deactivate_thin(id)?;
            }
        }
        self.pool.drop_spares()?;
        if matches!(self.pool.source, PoolSource::Loopback { .. }) {
            self.pool.deactivate()?;
        }
        Ok(())
    }

    fn status(&self) -> Status {
        let mut s: Status = Vec::new();
        let meta = self.meta.load().unwrap_or_default();
        s.push(("Pool Name".into(), self.pool.name.clone()));
        s.push(("Pool Blocksize".into(), Self::human(self.pool.block_size.0)));
        if let Some(b) = &meta.base {
            s.push(("Base Device Size".into(), Self::human(b.device.size.0)));
            s.push(("Backing Filesystem".into(), b.fs.clone()));
        }
        match self.pool_up().and_then(|()| self.pool.status()) {
            Ok(st) => {
                let bs = self.pool.block_size.0;
                s.push(("Data Space Used".into(), Self::human(st.data_used * bs)));
                s.push(("Data Space Total".into(), Self::human(st.data_total * bs)));
                s.push((
                    "Metadata Space Used".into(),
                    Self::human(st.meta_used * 4096),
                ));
                s.push((
                    "Metadata Space Total".into(),
                    Self::human(st.meta_total * 4096),
                ));
                s.push(("Pool Mode".into(), st.mode.clone()));
                let full = if st.error_if_no_space {
                    "writes fail (error_if_no_space)"
                } else {
                    "writes wait (queue_if_no_space)"
                };
                s.push(("When Full".into(), full.into()));
                let tid = if st.transaction_id == meta.transaction_id {
                    st.transaction_id.to_string()
                } else {
                    format!(
                        "pool {}, metadata {} (diverged: the next open repairs it)",
                        st.transaction_id, meta.transaction_id
                    )
                };
                s.push(("Transaction Id".into(), tid));
            }
            Err(e) => s.push(("Pool".into(), format!("unavailable: {e}"))),
        }
        if let PoolSource::Loopback { data, metadata, .. } = &self.pool.source {
            s.push(("Data Loop File".into(), data.display().to_string()));
            s.push(("Metadata Loop File".into(), metadata.display().to_string()));
        }
        let deferred = self
            .pool
            .live_thins()
            .map(|v| {
                v.iter()
                    .filter(|(_, i)| i.deferred_remove)
                    .count()
                    .to_string()
            })
            .unwrap_or_else(|e| e.to_string());
        s.push(("Deferred Removals".into(), deferred));
        s.push(("Deferred Deletions".into(), meta.deleting.len().to_string()));
        let spares = self
            .pool
            .spares()
            .map_or_else(|e| e.to_string(), |v| v.len().to_string());
        s.push(("Spare Devices".into(), spares));
        let unknown = match self.unknown_devices() {
            Ok(v) if v.is_empty() => "none".to_owned(),
            Ok(v) => v.iter().map(u32::to_string).collect::<Vec<_>>().join(" "),
            Err(e) => e.to_string(),
        };
        s.push(("Unknown Devices".into(), unknown));
        s.push((
            "Udev Sync Supported".into(),
            "false (nodes made by the driver)".into(),
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields are public, so `open_with` checks options a caller made by hand, before
    /// anything is made on disk (a block size of 0 divided the pool's size).
    #[test]
    fn open_with_checks_options_made_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        for o in [
            DevmapperOptions {
                block_size: 0,
                ..Default::default()
            },
            DevmapperOptions {
                base_size: (64 << 20) + 1,
                ..Default::default()
            },
        ] {
            let e = open_with(dir.path(), &o).unwrap_err();
            assert!(matches!(e, DriverError::Unsupported { .. }), "{e}");
        }
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing is made"
        );
    }

    #[test]
    fn options_parse_and_check_ranges() {
        let o = DevmapperOptions::try_from(&BTreeMap::from([
            ("dm.basesize".to_owned(), "1G".to_owned()),
            ("dm.fs".to_owned(), "xfs".to_owned()),
            ("dm.thinpooldev".to_owned(), "/dev/mapper/mypool".to_owned()),
        ]))
        .unwrap();
        assert_eq!(o.base_size, 1 << 30);
        assert_eq!(o.fs, Some(Fs::Xfs));
        assert_eq!(o.thinpooldev.as_deref(), Some("mypool"));
        for bad in [
            ("dm.fs", "btrfs"),
            ("dm.blocksize", "4K"),
            ("dm.basesize", "1M"),
            ("dm.nope", "1"),
        ] {
            let m = BTreeMap::from([(bad.0.to_owned(), bad.1.to_owned())]);
            assert!(DevmapperOptions::try_from(&m).is_err(), "{bad:?} accepted");
        }
    }
}
