//! The thin pool and its thin devices: activating the pool (the user's, or one on loopback
//! files), activating and deactivating thin devices by id, snapshots, deletion, the
//! transaction id. Device nodes are made here (`/dev/mapper/<name>`, `mknod`), so nothing
//! waits for udev.

use std::path::{Path, PathBuf};
use std::time::Duration;

use graphdriver_api::{DriverError, IoContext, Result};

use crate::dm::{DeviceInfo, Dm};
use crate::error::DevmapperError;
use crate::loopback;
use crate::pool_status::{PoolStatus, PoolTable, ThinStatus, ThinTable};
use crate::sectors::{Bytes, Sectors};
use crate::target::{Table, Target};

/// Where the pool comes from.
#[derive(Debug, Clone)]
pub enum PoolSource {
    /// An existing pool device, named by `dm.thinpooldev`.
    User,
    /// Loopback files the driver makes and attaches (for tests and demos).
    Loopback {
        /// The data file.
        data: PathBuf,
        /// The metadata file.
        metadata: PathBuf,
        /// Its size when made.
        data_size: u64,
        /// Its size when made.
        metadata_size: u64,
    },
}

/// How many idle device-mapper devices are kept for reuse (see [`Pool::deactivate_thin`]).
pub const MAX_SPARES: usize = 4;

/// The outcome of deleting a thin device from the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Deleted now, or there was no such device.
    Gone,
    /// Still open (a deferred removal pending): to be retried.
    Busy,
}

/// The pool.
#[derive(Debug)]
pub struct Pool {
    dm: Dm,
    /// The pool device's name.
    pub name: String,
    /// Thin device names are `<prefix>-<id>`.
    pub prefix: String,
    /// Where the pool comes from.
    pub source: PoolSource,
    /// Data block size.
    pub block_size: Bytes,
}

fn dm_err(e: DevmapperError) -> DriverError {
    e.into()
}

impl Pool {
    /// The pool called `name`, or to be made from `source`.
    pub fn new(
        name: String,
        prefix: String,
        source: PoolSource,
        block_size: Bytes,
    ) -> Result<Pool> {
        Ok(Pool {
            dm: Dm::open().map_err(dm_err)?,
            name,
            prefix,
            source,
            block_size,
        })
    }

    /// The control device.
    pub fn dm(&self) -> &Dm {
        &self.dm
    }

    /// Makes the pool live if it is not (call with the metadata lock held, so that two
    /// processes do not both make it).
    pub fn ensure_active(&self) -> Result<()> {
        if let Some(info) = self.dm.info(&self.name).map_err(dm_err)? {
            if info.active {
                return Ok(());
            }
            // a device without a table (a crash between create and load): start again
            match self.dm.remove(&self.name, false) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(libc::ENXIO) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let PoolSource::Loopback {
            data,
            metadata,
            data_size,
            metadata_size,
        } = &self.source
        else {
            return Err(DriverError::Unsupported {
                driver: "devmapper",
                reason: format!("thin pool {} does not exist (dm.thinpooldev)", self.name),
            });
        };
        // A new metadata device must begin with zeroes, or the kernel reads garbage as a
        // superblock: made (or made again) together with a new data file.
        let new_data = loopback::make_sparse_file(data, *data_size, false)?;
        if new_data {
            match std::fs::remove_file(metadata) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx("remove the old metadata file", metadata),
            }
        }
        loopback::make_sparse_file(metadata, *metadata_size, true)?;
        let data_dev = loopback::attach(data)?;
        let meta_dev = loopback::attach(metadata)?;
        let data_bytes = Bytes(std::fs::metadata(data).ctx("stat", data)?.len());
        let block_sectors = self.block_size.sectors();
        let table = Table {
            length: data_bytes.sectors().round_down_to(block_sectors),
            target: Target::ThinPool(PoolTable {
                metadata: meta_dev.major_minor.clone(),
                data: data_dev.major_minor.clone(),
                block_sectors,
                // an event when 1% is left (nothing listens: the pool's status says it too)
                low_water_blocks: (data_bytes.0 / self.block_size.0 / 100).max(1),
                // a full pool fails a container's writes with ENOSPC instead of hanging them
                error_if_no_space: true,
            }),
        };
        self.dm.create(&self.name).map_err(dm_err)?;
        let loaded = self
            .dm
            .load(&self.name, &table)
            .and_then(|()| self.dm.resume(&self.name));
        if let Err(e) = loaded {
            let removed = self.dm.remove(&self.name, false).map_err(dm_err);
            return Err(dm_err(e).with_rollback(removed));
        }
        // the loop devices stay attached while the pool holds them, and detach after it
        data_dev.close();
        meta_dev.close();
        Ok(())
    }

    /// Removes the pool device when nothing holds it (the loopback pool at cleanup).
    pub fn deactivate(&self) -> Result<()> {
        match self.dm.remove(&self.name, false) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.errno(), Some(libc::ENXIO) | Some(libc::EBUSY)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The pool's status.
    pub fn status(&self) -> Result<PoolStatus> {
        let line = self.dm.status(&self.name).map_err(dm_err)?;
        let st: PoolStatus = line.parse().map_err(dm_err)?;
        Ok(st)
    }

    /// Checks that the pool takes changes.
    pub fn check_writable(&self) -> Result<PoolStatus> {
        let st = self.status()?;
        if st.mode != "rw" || st.needs_check {
            return Err(DevmapperError::PoolUnusable {
                pool: self.name.clone(),
                state: format!(
                    "{}{}",
                    st.mode,
                    if st.needs_check { ", needs_check" } else { "" }
                ),
                full: (st.mode == "out_of_data_space")
                    .then(|| std::io::Error::from_raw_os_error(libc::ENOSPC)),
            }
            .into());
        }
        Ok(st)
    }

    fn message(&self, msg: &str) -> std::result::Result<(), DevmapperError> {
        self.dm.message(&self.name, msg)
    }

    /// `create_thin <id>`: a new empty thin device.
    pub fn create_thin(&self, id: u32) -> Result<()> {
        self.message(&format!("create_thin {id}")).map_err(dm_err)
    }

    /// `create_snap <id> <origin>`; an active origin is suspended around it (its filesystem
    /// frozen, so the snapshot is consistent) and resumed whatever happened.
    pub fn snapshot(&self, id: u32, origin: u32) -> Result<()> {
        let origin_name = self.thin_name(origin);
        let live = self
            .dm
            .info(&origin_name)
            .map_err(dm_err)?
            .is_some_and(|i| i.active && !i.suspended);
        let msg = format!("create_snap {id} {origin}");
        if !live {
            return self.message(&msg).map_err(dm_err);
        }
        self.dm.suspend(&origin_name).map_err(dm_err)?;
        let made = self.message(&msg);
        let resumed = self.dm.resume(&origin_name);
        made.map_err(dm_err)?;
        resumed.map_err(dm_err)
    }

    /// `delete <id>`.
    pub fn delete(&self, id: u32) -> Result<Deleted> {
        match self.message(&format!("delete {id}")) {
            Ok(()) => Ok(Deleted::Gone),
            Err(e) if e.errno() == Some(libc::ENODATA) => Ok(Deleted::Gone),
            Err(e) if e.errno() == Some(libc::EBUSY) => Ok(Deleted::Busy),
            Err(e) => Err(e.into()),
        }
    }

    /// `set_transaction_id <old> <new>`.
    pub fn set_transaction_id(&self, old: u64, new: u64) -> Result<()> {
        self.message(&format!("set_transaction_id {old} {new}"))
            .map_err(dm_err)
    }

    /// The name of thin device `id`.
    pub fn thin_name(&self, id: u32) -> String {
        format!("{}-{id}", self.prefix)
    }

    /// The thin device id a name of ours stands for.
    pub fn id_of_name(&self, name: &str) -> Option<u32> {
        name.strip_prefix(&self.prefix)?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    /// The node this backend makes for a device.
    pub fn node(&self, name: &str) -> PathBuf {
        Path::new("/dev/mapper").join(name)
    }

    fn pool_major_minor(&self) -> Result<String> {
        match self.dm.info(&self.name).map_err(dm_err)? {
            Some(i) => Ok(i.major_minor()),
            None => Err(DriverError::Unsupported {
                driver: "devmapper",
                reason: format!("thin pool {} is gone", self.name),
            }),
        }
    }

    /// Makes thin device `id` live with `size` (grown if it was smaller) and returns its
    /// node. A pending deferred removal is cancelled.
    pub fn activate(&self, id: u32, size: Bytes) -> Result<PathBuf> {
        let name = self.thin_name(id);
        let table = self.thin_table(id, size)?;
        let info = match self.dm.info(&name).map_err(dm_err)? {
            Some(info) if info.active => {
                if info.deferred_remove {
                    // If this fails, the kernel removes the device at its last close: the
                    // layer's next activation makes it again, so nothing depends on it.
                    let _ = self.dm.message(&name, "@cancel_deferred_remove");
                }
                info
            }
            stale => {
                if stale.is_none() && !self.take_spare(&name)? {
                    self.dm.create(&name).map_err(dm_err)?;
                }
                let loaded = self
                    .dm
                    .load(&name, &table)
                    .and_then(|()| self.dm.resume(&name));
                if let Err(e) = loaded {
                    let removed = self.dm.remove(&name, false).map_err(dm_err);
                    return Err(dm_err(e).with_rollback(removed));
                }
                self.dm
                    .info(&name)
                    .map_err(dm_err)?
                    .ok_or_else(|| DriverError::Unsupported {
                        driver: "devmapper",
                        reason: format!("{name} vanished after activation"),
                    })?
            }
        };
        self.make_node(&name, &info)?;
        Ok(self.node(&name))
    }

    /// The table of thin device `id` with `size` (in whole sectors).
    fn thin_table(&self, id: u32, size: Bytes) -> Result<Table> {
        Ok(Table {
            length: size.sectors(),
            target: Target::Thin(ThinTable {
                pool: self.pool_major_minor()?,
                device_id: id,
            }),
        })
    }

    /// Grows live thin device `id` to `size` (a new table, swapped in by a suspend and
    /// resume).
    pub fn grow(&self, id: u32, size: Bytes) -> Result<()> {
        let name = self.thin_name(id);
        let table = self.thin_table(id, size)?;
        self.dm.load(&name, &table).map_err(dm_err)?;
        self.dm.suspend(&name).map_err(dm_err)?;
        self.dm.resume(&name).map_err(dm_err)
    }

    fn make_node(&self, name: &str, info: &DeviceInfo) -> Result<()> {
        let node = self.node(name);
        let want = rustix::fs::makedev(info.major(), info.minor());
        if let Ok(st) = rustix::fs::stat(&node) {
            if st.st_rdev == want {
                return Ok(());
            }
            // not dropped: a stale node that stays would pass the EEXIST below as ours
            match std::fs::remove_file(&node) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx("remove the stale device node", node),
            }
        }
        match rustix::fs::mknodat(
            rustix::fs::CWD,
            &node,
            rustix::fs::FileType::BlockDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            want,
        ) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(e).ctx("make device node", node),
        }
    }

    /// Takes thin device `id` down. When it is still open (a mount leaked into another
    /// namespace), a few short retries, then a deferred removal the kernel finishes at its
    /// last close. Returns false when the removal was deferred.
    ///
    /// A device nothing holds is kept as a spare instead (up to [`MAX_SPARES`]): renamed
    /// `<prefix>-spare-<minor>`, its thin table swapped for an `error` one, which lets go of
    /// the thin device (under a `-retiring-` name meanwhile). The next activation takes it over, saving the dearest part of an
    /// activation and of a removal: adding a block device to the system (the first table
    /// load of a device) and taking it away again. The block device's page cache went with
    /// its last close, so nothing of the old layer can be read through it.
    pub fn deactivate_thin(&self, id: u32) -> Result<bool> {
        let name = self.thin_name(id);
        if self.keep_as_spare(&name)? {
            // a node left behind is harmless: make_node checks a node's device before use
            let _ = std::fs::remove_file(self.node(&name));
            return Ok(true);
        }
        let mut done = true;
        for attempt in 0..4 {
            match self.dm.remove(&name, false) {
                Ok(()) => break,
                Err(e) if e.errno() == Some(libc::ENXIO) => break,
                Err(e) if e.errno() == Some(libc::EBUSY) && attempt < 3 => {
                    std::thread::sleep(Duration::from_millis(5 << attempt));
                }
                Err(e) if e.errno() == Some(libc::EBUSY) => {
                    match self.dm.remove(&name, true) {
                        Ok(()) => {}
                        Err(e) if e.errno() == Some(libc::ENXIO) => {}
                        Err(e) => return Err(e.into()),
                    }
                    done = self.dm.info(&name).map_err(dm_err)?.is_none();
                }
                Err(e) => return Err(e.into()),
            }
        }
        // as above: make_node replaces a stale node
        let _ = std::fs::remove_file(self.node(&name));
        Ok(done)
    }

    fn spare_prefix(&self) -> String {
        format!("{}-spare-", self.prefix)
    }

    /// Where a device waits while its thin table is swapped out, before it is a spare.
    fn retiring_prefix(&self) -> String {
        format!("{}-retiring-", self.prefix)
    }

    /// The idle devices kept for reuse.
    pub fn spares(&self) -> Result<Vec<String>> {
        self.devices_named(&self.spare_prefix())
    }

    fn devices_named(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .dm
            .list()
            .map_err(dm_err)?
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .collect())
    }

    /// Makes live device `name` a spare when nothing holds it and there is room; whether it
    /// did. A spare that cannot let go of its thin device is removed.
    fn keep_as_spare(&self, name: &str) -> Result<bool> {
        let Some(info) = self.dm.info(name).map_err(dm_err)? else {
            return Ok(false);
        };
        if info.open_count != 0 || info.deferred_remove || self.spares()?.len() >= MAX_SPARES {
            return Ok(false);
        }
        // Renamed first, so from here no activation of this layer finds it by name; under a
        // name no activation takes either until its thin table is swapped out: an activation
        // resuming it while this process's resume suspends it fails with EINVAL.
        let retiring = format!("{}{}", self.retiring_prefix(), info.minor());
        match self.dm.rename(name, &retiring) {
            Ok(()) => {}
            Err(e) if matches!(e.errno(), Some(libc::ENXIO) | Some(libc::EBUSY)) => {
                return Ok(false)
            }
            Err(e) => return Err(e.into()),
        }
        let spare = format!("{}{}", self.spare_prefix(), info.minor());
        let released = self
            .dm
            .load(
                &retiring,
                &Table {
                    length: Sectors(8),
                    target: Target::Error,
                },
            )
            .and_then(|()| self.dm.resume(&retiring))
            .and_then(|()| {
                graphdriver_kit::failpoint::hit("devmapper.spare.retiring");
                self.dm.rename(&retiring, &spare)
            });
        match released {
            Ok(()) => {}
            // a store opened meanwhile dropped it (see drop_spares)
            Err(e) if e.errno() == Some(libc::ENXIO) => {}
            Err(e) => match self.dm.remove(&retiring, false) {
                Ok(()) => {}
                Err(r) if r.errno() == Some(libc::ENXIO) => {}
                Err(r) => return Err(dm_err(e).with_rollback(Err::<(), _>(dm_err(r)))),
            },
        }
        Ok(true)
    }

    /// Takes a spare over as `name`; whether there was one. The rename is atomic, so of two
    /// processes after one spare, one gets it.
    fn take_spare(&self, name: &str) -> Result<bool> {
        for spare in self.spares()? {
            match self.dm.rename(&spare, name) {
                Ok(()) => return Ok(true),
                Err(e) if e.errno() == Some(libc::ENXIO) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Removes the spares (at open, after a crash may have left one holding a thin device,
    /// and at cleanup), and devices a crash left between a layer and a spare (one a live
    /// process is still retiring ends the same way: its next step finds it gone).
    pub fn drop_spares(&self) -> Result<()> {
        let mut idle = self.spares()?;
        idle.extend(self.devices_named(&self.retiring_prefix())?);
        for spare in idle {
            match self.dm.remove(&spare, false) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(libc::ENXIO) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Whether thin device `id` exists in the pool: a table naming it loads only then (on a
    /// scratch device, removed again). The pool lists no ids, so this is how devices the
    /// metadata does not know are found.
    pub fn thin_exists(&self, id: u32) -> Result<bool> {
        let probe = format!("{}-probe", self.prefix);
        // one a crash left: if it cannot go, the create below fails and says so
        let _ = self.dm.remove(&probe, false);
        let table = self.thin_table(id, Sectors(8).bytes())?;
        self.dm.create(&probe).map_err(dm_err)?;
        let loaded = self.dm.load(&probe, &table);
        // not dropped: a probe left behind would hold the thin device it names
        match self.dm.remove(&probe, false) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::ENXIO) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(loaded.is_ok())
    }

    /// Our live thin devices: (id, info).
    pub fn live_thins(&self) -> Result<Vec<(u32, DeviceInfo)>> {
        let mut out = Vec::new();
        for name in self.dm.list().map_err(dm_err)? {
            let Some(id) = self.id_of_name(&name) else {
                continue;
            };
            if let Some(info) = self.dm.info(&name).map_err(dm_err)? {
                out.push((id, info));
            }
        }
        Ok(out)
    }

    /// What live thin device `id` maps (its own blocks and those shared with its origin).
    pub fn mapped_bytes(&self, id: u32) -> Result<Bytes> {
        let line = self.dm.status(&self.thin_name(id)).map_err(dm_err)?;
        let st: ThinStatus = line.parse().map_err(dm_err)?;
        Ok(st.mapped_sectors.bytes())
    }
}
