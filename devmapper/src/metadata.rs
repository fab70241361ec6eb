//! The backend's crash-safe record of the pool: which thin device id each layer has, ids in
//! flight, deletions still owed, and the transaction id the pool should have.
//!
//! One JSON file, `<home>/devicemapper/metadata.json`, rewritten atomically and flushed
//! (`write_durable`) at every step, under an flock of its own (taken inside the store's lock,
//! never around it). A step that changes the pool is written here *before* the pool changes
//! (`pending` for a device being made, `deleting` for one being deleted) and committed
//! *after* (with the pool's new transaction id), so recovery at the next open knows what a
//! crash may have left in the pool and undoes or finishes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use graphdriver_api::{DriverError, IoContext, Result};
use graphdriver_kit::store::{write_atomic, write_durable, FileLock};
use serde::{Deserialize, Serialize};

use crate::error::DevmapperError;
use crate::sectors::Bytes;

/// The largest thin device id (ids are 24 bits).
pub const MAX_DEVICE_ID: u32 = (1 << 24) - 1;

/// Key of the base device in `pending` (layer ids never begin with `.`).
pub const BASE_KEY: &str = ".base";

/// One thin device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinDevice {
    /// Its id in the pool.
    pub device_id: u32,
    /// Its size (a multiple of 512 bytes).
    pub size: Bytes,
}

/// The base device every layer without a parent is a snapshot of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseDevice {
    /// The device.
    pub device: ThinDevice,
    /// Its filesystem, `ext4` or `xfs`.
    pub fs: String,
}

/// The whole record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The transaction id the pool has once every committed step is in it.
    pub transaction_id: u64,
    /// The next device id to try.
    pub next_device_id: u32,
    /// The base device, once made.
    pub base: Option<BaseDevice>,
    /// Each layer's device.
    pub devices: BTreeMap<String, ThinDevice>,
    /// Devices being made (by layer id, or [`BASE_KEY`]): they may or may not be in the pool.
    pub pending: BTreeMap<String, u32>,
    /// Devices no layer owns any more, still to be deleted from the pool (busy when removed,
    /// or interrupted).
    pub deleting: Vec<u32>,
}

impl Metadata {
    /// Every device id the record knows of (owned, being made, being deleted).
    pub fn known_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.devices.values().map(|d| d.device_id).collect();
        ids.extend(self.base.iter().map(|b| b.device.device_id));
        ids.extend(self.pending.values().copied());
        ids.extend(self.deleting.iter().copied());
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// A device id no device has, advancing `next_device_id`.
    pub fn allocate(&mut self) -> std::result::Result<u32, DevmapperError> {
        let known = self.known_ids();
        for _ in 0..=MAX_DEVICE_ID {
            let id = self.next_device_id;
            self.next_device_id = if id >= MAX_DEVICE_ID { 0 } else { id + 1 };
            if known.binary_search(&id).is_err() {
                return Ok(id);
            }
        }
        Err(DevmapperError::NoFreeDeviceId)
    }
}

/// Where the record lives, and its lock.
#[derive(Debug)]
pub struct MetadataFile {
    path: PathBuf,
    lock: PathBuf,
}

impl MetadataFile {
    /// The record in `dir`.
    pub fn new(dir: &Path) -> MetadataFile {
        MetadataFile {
            path: dir.join("metadata.json"),
            lock: dir.join("metadata.lock"),
        }
    }

    /// Takes the record's lock.
    pub fn lock(&self) -> Result<FileLock> {
        FileLock::exclusive(&self.lock)
    }

    /// Reads the record (empty when there is none yet). Call with the lock held.
    pub fn load(&self) -> Result<Metadata> {
        match std::fs::read(&self.path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| DriverError::Corrupt {
                path: self.path.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Metadata::default()),
            Err(e) => Err(e).ctx("read", &self.path),
        }
    }

    /// Writes the record, on disk when this returns. Call with the lock held.
    pub fn save(&self, meta: &Metadata) -> Result<()> {
        write_durable(&self.path, &self.encode(meta)?)
    }

    /// Writes the record atomically, without waiting for the disk (it survives a crash of
    /// the process, not necessarily a power loss). Call with the lock held.
    pub fn save_unflushed(&self, meta: &Metadata) -> Result<()> {
        write_atomic(&self.path, &self.encode(meta)?)
    }

    fn encode(&self, meta: &Metadata) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(meta).map_err(|e| DriverError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_skips_every_known_id_and_wraps() {
        let mut m = Metadata {
            next_device_id: 1,
            ..Metadata::default()
        };
        m.devices.insert(
            "a".into(),
            ThinDevice {
                device_id: 1,
                size: Bytes(512),
            },
        );
        m.pending.insert("b".into(), 2);
        m.deleting.push(3);
        assert_eq!(m.allocate().unwrap(), 4);
        assert_eq!(m.allocate().unwrap(), 5);
        m.next_device_id = MAX_DEVICE_ID;
        assert_eq!(m.allocate().unwrap(), MAX_DEVICE_ID);
        assert_eq!(m.allocate().unwrap(), 0);
    }

    #[test]
    fn the_record_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = MetadataFile::new(dir.path());
        assert_eq!(f.load().unwrap(), Metadata::default());
        let m = Metadata {
            transaction_id: 3,
            deleting: vec![9],
            ..Metadata::default()
        };
        f.save(&m).unwrap();
        assert_eq!(f.load().unwrap(), m);
    }
}
