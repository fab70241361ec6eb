//! The snapshot records, in an embedded transactional database (redb): one table from
//! key to record, one counter for layer ids. Every change is one transaction, durable when
//! it returns.

use std::path::Path;

use redb::{Database, ReadableTable, Table, TableDefinition};

use crate::model::{Record, Result, SnapshotError};

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const NEXT_LAYER: &str = "next_layer";

fn db<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> SnapshotError {
    move |e| SnapshotError::Metadata {
        op,
        source: Box::new(e.into()),
    }
}

fn decode(op: &'static str, key: &str, bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes).map_err(|e| SnapshotError::Metadata {
        op,
        source: format!("record of {key}: {e}").into(),
    })
}

/// The database of snapshot records.
#[derive(Debug)]
pub(crate) struct Metadata {
    db: Database,
}

/// The tables of one write transaction.
pub(crate) struct Tables<'t> {
    snaps: Table<'t, &'static str, &'static [u8]>,
    counters: Table<'t, &'static str, u64>,
}

impl Metadata {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Metadata> {
        let db = Database::create(path).map_err(db("open"))?;
        let m = Metadata { db };
        m.write("open", |_| Ok(()))?;
        Ok(m)
    }

    /// The record of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        let txn = self.db.begin_read().map_err(db("read"))?;
        let t = txn.open_table(SNAPSHOTS).map_err(db("read"))?;
        match t.get(key).map_err(db("read"))? {
            Some(v) => Ok(Some(decode("read", key, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every record, by key.
    pub fn all(&self) -> Result<Vec<(String, Record)>> {
        let txn = self.db.begin_read().map_err(db("list"))?;
        let t = txn.open_table(SNAPSHOTS).map_err(db("list"))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db("list"))? {
            let (k, v) = row.map_err(db("list"))?;
            out.push((k.value().to_owned(), decode("list", k.value(), v.value())?));
        }
        Ok(out)
    }

    /// Runs `f` in one write transaction: committed (durably) when it returns `Ok`, undone
    /// when it returns an error.
    pub fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Tables<'_>) -> Result<T>,
    ) -> Result<T> {
        let txn = self.db.begin_write().map_err(db(op))?;
        let out = {
            let mut tables = Tables {
                snaps: txn.open_table(SNAPSHOTS).map_err(db(op))?,
                counters: txn.open_table(COUNTERS).map_err(db(op))?,
            };
            f(&mut tables)?
        };
        txn.commit().map_err(db(op))?;
        Ok(out)
    }
}

impl Tables<'_> {
    /// The record of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        match self.snaps.get(key).map_err(db("read"))? {
            Some(v) => Ok(Some(decode("read", key, v.value())?)),
            None => Ok(None),
        }
    }

    /// Writes the record of `key`.
    pub fn put(&mut self, key: &str, record: &Record) -> Result<()> {
        let bytes = serde_json::to_vec(record).map_err(|e| SnapshotError::Metadata {
            op: "write",
            source: Box::new(e),
        })?;
        self.snaps
            .insert(key, bytes.as_slice())
            .map_err(db("write"))?;
        Ok(())
    }

    /// Deletes the record of `key`.
    pub fn delete(&mut self, key: &str) -> Result<()> {
        self.snaps.remove(key).map_err(db("delete"))?;
        Ok(())
    }

    /// Whether any snapshot names `key` as its parent.
    pub fn has_children(&self, key: &str) -> Result<bool> {
        for row in self.snaps.iter().map_err(db("read"))? {
            let (k, v) = row.map_err(db("read"))?;
            if decode("read", k.value(), v.value())?.parent.as_deref() == Some(key) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A number never handed out before in this database, for a layer id.
    pub fn next_layer(&mut self) -> Result<u64> {
        let n = self
            .counters
            .get(NEXT_LAYER)
            .map_err(db("read"))?
            .map_or(1, |v| v.value());
        self.counters
            .insert(NEXT_LAYER, n + 1)
            .map_err(db("write"))?;
        Ok(n)
    }
}
