//! The store's records in one redb file: images and containers by name, and layers being
//! created or removed ("pending"), which no image or container names yet or any more.
//!
//! Layer reference counts are never stored: they are counted from the image and container
//! records when needed, so they cannot drift.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use crate::{
    ContainerRecord, ContainerState, Digest, ImageError, ImageRecord, LayerRecord, Result,
};

/// Image name → [`ImageRecord`] as JSON.
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// Config digest → the config document, for every config an image names.
const CONFIGS: TableDefinition<&str, &[u8]> = TableDefinition::new("configs");
/// Container name → [`ContainerRecord`] as JSON.
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
/// ChainID → depth in its chain (0 is a base layer), for layers being created or removed.
const PENDING: TableDefinition<&str, u64> = TableDefinition::new("pending_layers");

/// The record database.
#[derive(Debug)]
pub(crate) struct RecordDb {
    db: Database,
    path: PathBuf,
}

/// A layer that is pending: its ChainID and depth.
pub(crate) type Pending = (Digest, u64);

impl RecordDb {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<RecordDb> {
        let db = Database::create(path).map_err(|e| err("open", path, e))?;
        let rec = RecordDb {
            db,
            path: path.to_owned(),
        };
        let tx = rec.db.begin_write().map_err(|e| rec.err("begin", e))?;
        tx.open_table(IMAGES)
            .map_err(|e| rec.err("create tables", e))?;
        tx.open_table(PENDING)
            .map_err(|e| rec.err("create tables", e))?;
        tx.open_table(CONFIGS)
            .map_err(|e| rec.err("create tables", e))?;
        tx.open_table(CONTAINERS)
            .map_err(|e| rec.err("create tables", e))?;
        tx.commit().map_err(|e| rec.err("commit", e))?;
        Ok(rec)
    }

    fn err(&self, op: &'static str, e: impl Into<redb::Error>) -> ImageError {
        err(op, &self.path, e)
    }

    /// Every image, sorted by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let tx = self.db.begin_read().map_err(|e| self.err("begin", e))?;
        let t = tx
            .open_table(IMAGES)
            .map_err(|e| self.err("open table", e))?;
        read_all(&t, |e| self.err("read images", e))
    }

    /// The image named `name`.
    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>> {
        let tx = self.db.begin_read().map_err(|e| self.err("begin", e))?;
        let t = tx
            .open_table(IMAGES)
            .map_err(|e| self.err("open table", e))?;
        let v = t.get(name).map_err(|e| self.err("read image", e))?;
        v.map(|v| decode(name, v.value())).transpose()
    }

    /// The config document with digest `digest`, if an image names it.
    pub fn config(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read().map_err(|e| self.err("begin", e))?;
        let t = tx
            .open_table(CONFIGS)
            .map_err(|e| self.err("open table", e))?;
        let v = t
            .get(digest.as_str())
            .map_err(|e| self.err("read config", e))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// Every pending layer.
    pub fn pending(&self) -> Result<Vec<Pending>> {
        let tx = self.db.begin_read().map_err(|e| self.err("begin", e))?;
        let t = tx
            .open_table(PENDING)
            .map_err(|e| self.err("open table", e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err("read pending", e))? {
            let (k, v) = row.map_err(|e| self.err("read pending", e))?;
            out.push((Digest::parse(k.value(), "pending_layers")?, v.value()));
        }
        Ok(out)
    }

    /// Records that a layer is about to be created (committed before the driver sees it).
    pub fn add_pending(&self, chain_id: &Digest, depth: u64) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.err("begin", e))?;
        {
            let mut t = tx
                .open_table(PENDING)
                .map_err(|e| self.err("open table", e))?;
            t.insert(chain_id.as_str(), depth)
                .map_err(|e| self.err("write pending", e))?;
        }
        tx.commit().map_err(|e| self.err("commit", e))
    }

    /// Forgets pending layers (created and now named, or removed).
    pub fn clear_pending(&self, chain_ids: &[Digest]) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.err("begin", e))?;
        {
            let mut t = tx
                .open_table(PENDING)
                .map_err(|e| self.err("open table", e))?;
            for c in chain_ids {
                t.remove(c.as_str())
                    .map_err(|e| self.err("write pending", e))?;
            }
        }
        tx.commit().map_err(|e| self.err("commit", e))
    }

    /// In one transaction: writes `records` (replacing images of the same names) and forgets
    /// the pending layers they name. Layers only the replaced images named become pending
    /// (to be removed); they are returned, top first.
    /// `configs` are the config documents the records name.
    pub fn commit_images(
        &self,
        records: &[ImageRecord],
        configs: &[(&Digest, &[u8])],
    ) -> Result<Vec<Pending>> {
        let tx = self.db.begin_write().map_err(|e| self.err("begin", e))?;
        let orphans;
        {
            let mut images = tx
                .open_table(IMAGES)
                .map_err(|e| self.err("open table", e))?;
            let mut pending = tx
                .open_table(PENDING)
                .map_err(|e| self.err("open table", e))?;
            let mut replaced = Vec::new();
            for r in records {
                let json = serde_json::to_vec(r).map_err(|source| ImageError::Corrupt {
                    key: r.name.to_string(),
                    source,
                })?;
                let old = images
                    .insert(r.name.as_str(), json.as_slice())
                    .map_err(|e| self.err("write image", e))?;
                if let Some(old) = old {
                    replaced.push(decode(r.name.as_str(), old.value())?);
                }
                for l in &r.layers {
                    pending
                        .remove(l.chain_id.as_str())
                        .map_err(|e| self.err("write pending", e))?;
                }
            }
            let mut config_table = tx
                .open_table(CONFIGS)
                .map_err(|e| self.err("open table", e))?;
            for (d, bytes) in configs {
                config_table
                    .insert(d.as_str(), *bytes)
                    .map_err(|e| self.err("write config", e))?;
            }
            let containers = tx
                .open_table(CONTAINERS)
                .map_err(|e| self.err("open table", e))?;
            drop_unused_configs(&images, &containers, &mut config_table, &replaced, |e| {
                self.err("write config", e)
            })?;
            let named = named_layers(&images, &containers, |e| self.err("read records", e))?;
            orphans = unreferenced(&named, replaced.iter().map(|r| r.layers.as_slice()));
            for (c, depth) in &orphans {
                pending
                    .insert(c.as_str(), *depth)
                    .map_err(|e| self.err("write pending", e))?;
            }
        }
        tx.commit().map_err(|e| self.err("commit", e))?;
        Ok(orphans)
    }

    /// In one transaction: deletes the image named `name` and marks the layers no other image
    /// or container names as pending (to be removed). Returns the record and those layers, top
    /// first. Fails with [`ImageError::InUse`] if a container was created from this image.
    pub fn remove_image(&self, name: &str) -> Result<Option<(ImageRecord, Vec<Pending>)>> {
        let tx = self.db.begin_write().map_err(|e| self.err("begin", e))?;
        let out;
        {
            let mut images = tx
                .open_table(IMAGES)
                .map_err(|e| self.err("open table", e))?;
            let old: Option<ImageRecord> = images
                .remove(name)
                .map_err(|e| self.err("delete image", e))?
                .map(|v| decode(name, v.value()))
                .transpose()?;
            let Some(old) = old else {
                return Ok(None);
            };
            let containers = tx
                .open_table(CONTAINERS)
                .map_err(|e| self.err("open table", e))?;
            let users: Vec<String> =
                read_all::<ContainerRecord>(&containers, |e| self.err("read records", e))?
                    .into_iter()
                    .filter(|c| c.image == old.name && c.image_id == old.config)
                    .map(|c| c.name.to_string())
                    .collect();
            if !users.is_empty() {
                // Dropping the transaction undoes the removal.
                return Err(ImageError::InUse {
                    image: name.to_owned(),
                    containers: users,
                });
            }
            let named = named_layers(&images, &containers, |e| self.err("read records", e))?;
            let orphans = unreferenced(&named, std::iter::once(old.layers.as_slice()));
            let mut config_table = tx
                .open_table(CONFIGS)
                .map_err(|e| self.err("open table", e))?;
            drop_unused_configs(
                &images,
                &containers,
                &mut config_table,
                std::slice::from_ref(&old),
                |e| self.err("write config", e),
            )?;
            let mut pending = tx
                .open_table(PENDING)
                .map_err(|e| self.err("open table", e))?;
            for (c, depth) in &orphans {
                pending
                    .insert(c.as_str(), *depth)
                    .map_err(|e| self.err("write pending", e))?;
            }
            out = (old, orphans);
        }
        tx.commit().map_err(|e| self.err("commit", e))?;
        Ok(Some(out))
    }

    /// Every ChainID some image or container names.
    pub fn referenced(&self) -> Result<BTreeSet<Digest>> {
        let tx = self.db.begin_read().map_err(|e| self.err("begin", e))?;
        let images = tx
            .open_table(IMAGES)
            .map_err(|e| self.err("open table", e))?;
        let containers = tx
            .open_table(CONTAINERS)
            .map_err(|e| self.err("open table", e))?;
        named_layers(&images, &containers, |e| self.err("read records", e))
    }

    /// Every container, sorted by name.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        let tx = self.db.begin_read().map_err(|e| self.err("begin", e))?;
        let t = tx
            .open_table(CONTAINERS)
            .map_err(|e| self.err("open table", e))?;
        read_all::<ContainerRecord>(&t, |e| self.err("read containers", e))
    }

    /// The container named `name`.
    pub fn container(&self, name: &str) -> Result<Option<ContainerRecord>> {
        let tx = self.db.begin_read().map_err(|e| self.err("begin", e))?;
        let t = tx
            .open_table(CONTAINERS)
            .map_err(|e| self.err("open table", e))?;
        let v = t.get(name).map_err(|e| self.err("read container", e))?;
        v.map(|v| decode(name, v.value())).transpose()
    }

    /// Records a new container (in state [`ContainerState::Creating`], before its layer is
    /// made); fails with [`ImageError::ContainerExists`] if the name is taken.
    pub fn insert_container(&self, record: &ContainerRecord) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.err("begin", e))?;
        {
            let mut t = tx
                .open_table(CONTAINERS)
                .map_err(|e| self.err("open table", e))?;
            let name = record.name.as_str();
            if t.get(name)
                .map_err(|e| self.err("read container", e))?
                .is_some()
            {
                return Err(ImageError::ContainerExists(name.to_owned()));
            }
            t.insert(name, encode(name, record)?.as_slice())
                .map_err(|e| self.err("write container", e))?;
        }
        tx.commit().map_err(|e| self.err("commit", e))
    }

    /// Sets a container's state, and returns its record as it was.
    pub fn set_container_state(
        &self,
        name: &str,
        state: ContainerState,
    ) -> Result<ContainerRecord> {
        let tx = self.db.begin_write().map_err(|e| self.err("begin", e))?;
        let old;
        {
            let mut t = tx
                .open_table(CONTAINERS)
                .map_err(|e| self.err("open table", e))?;
            let mut rec: ContainerRecord =
                match t.get(name).map_err(|e| self.err("read container", e))? {
                    Some(v) => decode(name, v.value())?,
                    None => return Err(ImageError::ContainerNotFound(name.to_owned())),
                };
            old = rec.clone();
            rec.state = state;
            t.insert(name, encode(name, &rec)?.as_slice())
                .map_err(|e| self.err("write container", e))?;
        }
        tx.commit().map_err(|e| self.err("commit", e))?;
        Ok(old)
    }

    /// In one transaction: deletes the container named `name` and marks the image layers no
    /// image or other container names as pending (to be removed). Returns them, top first.
    pub fn delete_container(&self, name: &str) -> Result<Vec<Pending>> {
        let tx = self.db.begin_write().map_err(|e| self.err("begin", e))?;
        let orphans;
        {
            let mut containers = tx
                .open_table(CONTAINERS)
                .map_err(|e| self.err("open table", e))?;
            let old: ContainerRecord = match containers
                .remove(name)
                .map_err(|e| self.err("delete container", e))?
            {
                Some(v) => decode(name, v.value())?,
                None => return Ok(Vec::new()),
            };
            let images = tx
                .open_table(IMAGES)
                .map_err(|e| self.err("open table", e))?;
            let named = named_layers(&images, &containers, |e| self.err("read records", e))?;
            orphans = unreferenced(&named, std::iter::once(old.layers.as_slice()));
            let mut config_table = tx
                .open_table(CONFIGS)
                .map_err(|e| self.err("open table", e))?;
            let named_configs =
                named_configs(&images, &containers, |e| self.err("read records", e))?;
            if !named_configs.contains(&old.image_id) {
                config_table
                    .remove(old.image_id.as_str())
                    .map_err(|e| self.err("write config", e))?;
            }
            let mut pending = tx
                .open_table(PENDING)
                .map_err(|e| self.err("open table", e))?;
            for (c, depth) in &orphans {
                pending
                    .insert(c.as_str(), *depth)
                    .map_err(|e| self.err("write pending", e))?;
            }
        }
        tx.commit().map_err(|e| self.err("commit", e))?;
        Ok(orphans)
    }
}

/// Every record of a table (images or containers), in key order.
fn read_all<T: serde::de::DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    err: impl Fn(redb::StorageError) -> ImageError,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for row in t.iter().map_err(&err)? {
        let (k, v) = row.map_err(&err)?;
        out.push(decode(k.value(), v.value())?);
    }
    Ok(out)
}

/// Every ChainID an image or a container names.
fn named_layers(
    images: &impl ReadableTable<&'static str, &'static [u8]>,
    containers: &impl ReadableTable<&'static str, &'static [u8]>,
    err: impl Fn(redb::StorageError) -> ImageError,
) -> Result<BTreeSet<Digest>> {
    let images: Vec<ImageRecord> = read_all(images, &err)?;
    let containers: Vec<ContainerRecord> = read_all(containers, &err)?;
    Ok(images
        .into_iter()
        .flat_map(|r| r.layers)
        .chain(containers.into_iter().flat_map(|c| c.layers))
        .map(|l| l.chain_id)
        .collect())
}

/// Every config digest an image or a container names.
fn named_configs(
    images: &impl ReadableTable<&'static str, &'static [u8]>,
    containers: &impl ReadableTable<&'static str, &'static [u8]>,
    err: impl Fn(redb::StorageError) -> ImageError,
) -> Result<BTreeSet<Digest>> {
    let images: Vec<ImageRecord> = read_all(images, &err)?;
    let containers: Vec<ContainerRecord> = read_all(containers, &err)?;
    let named: BTreeSet<Digest> = images
        .into_iter()
        .map(|r| r.config)
        .chain(containers.into_iter().map(|c| c.image_id))
        .collect();
    Ok(named)
}

/// The layers of the `gone` stacks that are not in `named`, top first (children before
/// parents).
fn unreferenced<'a>(
    named: &BTreeSet<Digest>,
    gone: impl Iterator<Item = &'a [LayerRecord]>,
) -> Vec<Pending> {
    let mut out: Vec<Pending> = Vec::new();
    for layers in gone {
        for (depth, l) in layers.iter().enumerate() {
            if !named.contains(&l.chain_id) && !out.iter().any(|(c, _)| c == &l.chain_id) {
                out.push((l.chain_id.clone(), depth as u64));
            }
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.1));
    out
}

/// Deletes the configs of `gone` that no image or container names.
fn drop_unused_configs(
    images: &impl ReadableTable<&'static str, &'static [u8]>,
    containers: &impl ReadableTable<&'static str, &'static [u8]>,
    configs: &mut redb::Table<&'static str, &'static [u8]>,
    gone: &[ImageRecord],
    err: impl Fn(redb::StorageError) -> ImageError,
) -> Result<()> {
    let named = named_configs(images, containers, &err)?;
    for r in gone {
        if !named.contains(&r.config) {
            configs.remove(r.config.as_str()).map_err(&err)?;
        }
    }
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

fn encode(key: &str, value: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| ImageError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

fn err(op: &'static str, path: &Path, e: impl Into<redb::Error>) -> ImageError {
    ImageError::Database {
        op,
        path: path.to_owned(),
        source: Box::new(e.into()),
    }
}
