//! The crash journal: one record per multi-step operation in flight.
//!
//! An operation writes its journal record before its first step and deletes it after its
//! last. A record still present when a driver is opened means the process died part-way; the
//! store then rolls the operation back (create, apply before its merge) or forward (remove,
//! apply during its merge). Operations on one layer are serialised by locks, so one record per
//! layer is enough: `journal/<id>.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fs::atomic_file::{read_optional, remove_optional, write_atomic};
use crate::{DriverError, IoContext, LayerId, Result};

/// A multi-step operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Creating a layer: rolled back unless its record was written.
    Create,
    /// Removing a layer: always rolled forward.
    Remove,
    /// Applying a layer archive: rolled back while staging, forward while merging.
    Apply {
        /// The staging directory (same filesystem as the target).
        staging: PathBuf,
        /// The directory the archive is applied to.
        target: PathBuf,
        /// The layers below it, for backends that keep only changes (see
        /// [`ApplyTarget::lowers`](crate::archive::ApplyTarget::lowers)).
        #[serde(default)]
        lowers: Vec<PathBuf>,
        /// Whether staging finished and the merge began.
        merging: bool,
        /// The layer root's mtime before the apply, when staging happens inside the layer,
        /// to restore when the apply is rolled back.
        #[serde(default)]
        root_mtime: Option<(i64, i64)>,
    },
}

impl Operation {
    /// `create`, `remove` or `apply`.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Remove => "remove",
            Operation::Apply { .. } => "apply",
        }
    }
}

/// A journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The layer the operation acts on.
    pub id: LayerId,
    /// The operation and its progress.
    #[serde(flatten)]
    pub op: Operation,
}

/// A journal record found at open.
#[derive(Debug)]
pub enum Pending {
    /// A record to settle.
    Entry(Entry),
    /// A record that cannot be read.
    Unreadable {
        /// The layer its file is named after, if any.
        id: Option<LayerId>,
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        error: DriverError,
    },
}

/// The journal directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
    /// Space held back so that a record can still be written on a full disk (see
    /// [`Journal::write`]).
    reserve: PathBuf,
    /// Whether this process gave the reserve up (so `finish` tries to make it again; the
    /// common path costs no system call).
    released: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The size of the space reserve: enough for the records and metadata of the operations
/// that free space (remove), many times over.
const RESERVE_BYTES: usize = 1 << 20;

impl Journal {
    /// The journal in `dir`; its space reserve is the file `reserve`, made here when it is
    /// missing (and left for later when the disk is full).
    pub(crate) fn new(dir: PathBuf, reserve: PathBuf) -> Self {
        let j = Journal {
            dir,
            reserve,
            released: Default::default(),
        };
        j.refill_reserve();
        j
    }

    /// Makes the space reserve if it is missing; a full disk leaves it for a later call.
    pub(crate) fn refill_reserve(&self) {
        if self.reserve.exists() {
            return;
        }
        // Real blocks, not a hole: written through a temporary name, so a reserve that
        // exists is whole.
        let _ = crate::fs::atomic_file::write_durable(&self.reserve, &vec![0x5a; RESERVE_BYTES]);
    }

    /// Gives the reserve's space back to the filesystem; whether there was one.
    fn release_reserve(&self) -> bool {
        if std::fs::remove_file(&self.reserve).is_err() {
            return false;
        }
        self.released
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // btrfs frees the blocks when the transaction commits
        if let Ok(f) = std::fs::File::open(&self.dir) {
            let _ = rustix::fs::syncfs(&f);
        }
        true
    }

    fn path(&self, id: &LayerId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes (or replaces) the record for `entry.id`, atomically: a crashed process leaves
    /// the old record or the new one. (Not flushed to disk: see the crate docs on power loss.)
    ///
    /// On a full disk a `remove` gives the space reserve up and tries again, so that the
    /// operation that frees space still runs when nothing else can; [`finish`](Self::finish)
    /// makes the reserve again once there is room. The operations that take space (create,
    /// apply) never touch the reserve: they fail with a storage-full error, and the reserve
    /// stays for the remove that makes room.
    pub fn write(&self, entry: &Entry) -> Result<()> {
        let data = serde_json::to_vec(entry).map_err(|e| DriverError::Corrupt {
            path: self.path(&entry.id),
            reason: e.to_string(),
        })?;
        match write_atomic(&self.path(&entry.id), &data) {
            Err(e)
                if e.is_storage_full()
                    && entry.op == Operation::Remove
                    && self.release_reserve() =>
            {
                self.write_after_release(&entry.id, &data)
            }
            other => other,
        }
    }

    /// Writes a remove's record once the reserve is given up. Filesystems that free space
    /// when their transaction commits may refuse the first try: ZFS counts an unlinked
    /// file's blocks as used until its transaction group syncs (within `zfs_txg_timeout`,
    /// 5 s), and its `syncfs` commits only the intent log. So the write is tried again for
    /// up to about 10 s while the disk says it is full.
    fn write_after_release(&self, id: &LayerId, data: &[u8]) -> Result<()> {
        let mut wait = std::time::Duration::from_millis(50);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match write_atomic(&self.path(id), data) {
                Err(e) if e.is_storage_full() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(std::time::Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// Deletes the record for `id`: the operation is complete. Remakes the space reserve if
    /// this process gave it up on a full disk and there is room again.
    pub fn finish(&self, id: &LayerId) -> Result<()> {
        remove_optional(&self.path(id))?;
        if self
            .released
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.refill_reserve();
            // still full: try again after the next operation
            if !self.reserve.exists() {
                self.released
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The record for `id`, if one is pending.
    pub fn get(&self, id: &LayerId) -> Result<Option<Entry>> {
        let path = self.path(id);
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

    /// Every pending record. A record that cannot be read is returned as an error of its
    /// own (with the layer its file is named after, if any), so that one damaged record
    /// never hides the others.
    pub fn pending(&self) -> Result<Vec<Pending>> {
        let mut out = Vec::new();
        for ent in std::fs::read_dir(&self.dir).ctx("read journal", &self.dir)? {
            let ent = ent.ctx("read journal", &self.dir)?;
            let name = ent.file_name();
            // temporaries of writes in flight (or of a crash) end in ".tmp" and begin with "."
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let Ok(id) = LayerId::new(stem) else {
                out.push(Pending::Unreadable {
                    id: None,
                    path: ent.path(),
                    error: DriverError::Corrupt {
                        path: ent.path(),
                        reason: "journal file is not named after a layer".into(),
                    },
                });
                continue;
            };
            match self.get(&id) {
                Ok(Some(e)) if e.id == id => out.push(Pending::Entry(e)),
                Ok(Some(_)) => out.push(Pending::Unreadable {
                    id: Some(id),
                    path: ent.path(),
                    error: DriverError::Corrupt {
                        path: ent.path(),
                        reason: "journal record names another layer than its file".into(),
                    },
                }),
                Ok(None) => {}
                Err(error) => out.push(Pending::Unreadable {
                    id: Some(id),
                    path: ent.path(),
                    error,
                }),
            }
        }
        Ok(out)
    }

    /// Moves an unreadable record aside (`<name>.unreadable`, which [`pending`](Self::pending)
    /// skips), keeping it for inspection.
    pub fn set_aside(&self, path: &Path) -> Result<()> {
        let mut aside = path.as_os_str().to_owned();
        aside.push(".unreadable");
        match std::fs::rename(path, &aside) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).ctx("set aside journal record", path)
            }
            _ => Ok(()),
        }
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
