//! Layers set aside because an operation on them could not be finished or rolled back.
//!
//! One bad layer must never make the store unusable: when recovery at open (or the settling
//! of a failed merge) cannot finish a journal record, the record is retired and the layer is
//! quarantined instead, alone. A quarantined layer is reported by `status`, refuses to be
//! mounted, applied to, diffed or used as a parent, and can be removed (which ends its
//! quarantine). One record per layer: `quarantine/<id>.json`.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::journal::Entry;
use crate::fs::atomic_file::{read_optional, remove_optional, write_atomic};
use crate::{DriverError, IoContext, LayerId, Result};

/// Why a layer is quarantined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// The layer.
    pub id: LayerId,
    /// What could not be done, with its causes.
    pub reason: String,
    /// The journal record that could not be settled, if one was read.
    pub entry: Option<Entry>,
    /// When it was quarantined.
    pub since: SystemTime,
}

/// The quarantine directory.
#[derive(Debug, Clone)]
pub struct Quarantine {
    dir: PathBuf,
}

impl Quarantine {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Quarantine { dir }
    }

    fn path(&self, id: &LayerId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Quarantines `id` (replacing an earlier record of it).
    pub fn add(&self, id: &LayerId, reason: String, entry: Option<Entry>) -> Result<()> {
        tracing::warn!(layer = %id, %reason, "layer quarantined");
        let rec = QuarantineRecord {
            id: id.clone(),
            reason,
            entry,
            since: SystemTime::now(),
        };
        let path = self.path(id);
        let data = serde_json::to_vec_pretty(&rec).map_err(|e| DriverError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &data)
    }

    /// Ends the quarantine of `id`.
    pub fn release(&self, id: &LayerId) -> Result<()> {
        remove_optional(&self.path(id))
    }

    /// Why `id` is quarantined, if it is. A record that cannot be read still quarantines.
    pub fn get(&self, id: &LayerId) -> Result<Option<QuarantineRecord>> {
        let path = self.path(id);
        Ok(read_optional(&path)?.map(|data| self.decode(id, &data)))
    }

    fn decode(&self, id: &LayerId, data: &[u8]) -> QuarantineRecord {
        serde_json::from_slice(data).unwrap_or_else(|e| QuarantineRecord {
            id: id.clone(),
            reason: format!("unreadable quarantine record: {e}"),
            entry: None,
            since: SystemTime::UNIX_EPOCH,
        })
    }

    /// Every quarantined layer, by id.
    pub fn list(&self) -> Result<Vec<QuarantineRecord>> {
        let mut out = Vec::new();
        for ent in std::fs::read_dir(&self.dir).ctx("read directory", &self.dir)? {
            let ent = ent.ctx("read directory", &self.dir)?;
            let name = ent.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| LayerId::new(n).ok())
            else {
                continue;
            };
            if let Some(rec) = self.get(&id)? {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

/// An error and its causes on one line, for a quarantine record.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
