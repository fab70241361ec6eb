//! Containers: named writable layers on images, their sizes, and `commit` of one as a new
//! image.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::SystemTime;

use graphdriver_api::{CreateOpts, DriverError, LayerId};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::chain_id::layer_id;
use crate::container_record::container_id;
use crate::image_store::{driver_err, LayerRemoval};
use crate::{
    chain_ids, layer_media_type, Compression, ContainerRecord, ContainerSize, ContainerState,
    Digest, ImageError, ImageName, ImageRecord, ImageStore, LayerRecord, Result,
};

/// What removing a container did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRemoval {
    /// The removed container.
    pub container: ContainerRecord,
    /// Image layers removed with it: no image or other container used them any more (their
    /// image had been replaced or removed), top first.
    pub removed: Vec<LayerId>,
    /// Such layers the driver would not remove yet; a later open removes them.
    pub kept: Vec<LayerId>,
}

impl ImageStore {
    /// Creates container `name`: a writable layer with id `name` on the top layer of image
    /// `image`. A crash part-way leaves a record that the next [`open`](Self::open) removes
    /// together with the layer, if it was made.
    pub fn create_container(&self, image: &str, name: &str) -> Result<ContainerRecord> {
        let id = container_id(name)?;
        let image = self.get(image)?;
        if self.driver.exists(&id) {
            return Err(ImageError::ContainerExists(name.to_owned()));
        }
        let mut record = ContainerRecord {
            name: id.clone(),
            image: image.name.clone(),
            image_id: image.config.clone(),
            layers: image.layers.clone(),
            created: SystemTime::now(),
            state: ContainerState::Creating,
        };
        self.db.insert_container(&record)?;
        let opts = CreateOpts {
            read_write: true,
            ..CreateOpts::default()
        };
        if let Err(source) = self
            .driver
            .create(&id, record.parent_layer()?.as_ref(), &opts)
        {
            let error = match source {
                DriverError::AlreadyExists(_) => ImageError::ContainerExists(name.to_owned()),
                source => driver_err("create", &id, source),
            };
            // Nothing was made: forget the record (it names no layer of its own).
            return match self.db.delete_container(name) {
                Ok(orphans) => match self.remove_layers(&orphans) {
                    Ok(_) => Err(error),
                    Err(rollback) => Err(rollback_failed(error, rollback)),
                },
                Err(rollback) => Err(rollback_failed(error, rollback)),
            };
        }
        graphdriver_kit::failpoint::hit("image.container.after-create");
        self.db.set_container_state(name, ContainerState::Created)?;
        record.state = ContainerState::Created;
        Ok(record)
    }

    /// Every container, sorted by name (with those an interrupted create or remove left,
    /// until the next [`open`](Self::open) removes them).
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        self.db.containers()
    }

    /// The container named `name` (created and whole).
    pub fn container(&self, name: &str) -> Result<ContainerRecord> {
        match self.db.container(name)? {
            Some(c) if c.state == ContainerState::Created => Ok(c),
            _ => Err(ImageError::ContainerNotFound(name.to_owned())),
        }
    }

    /// The container's own size (the regular-file bytes of its writable layer, measured by
    /// the driver: from overlay2's upper directory and btrfs's own tree, never walking the
    /// image; vfs compares with the image), and its virtual size, the image's recorded size
    /// plus its own.
    pub fn container_size(&self, name: &str) -> Result<ContainerSize> {
        let c = self.container(name)?;
        let size = self
            .driver
            .diff_size(&c.name, None)
            .map_err(|source| driver_err("measure", &c.name, source))?;
        Ok(ContainerSize {
            size,
            virtual_size: c.image_size() + size,
        })
    }

    /// Removes container `name` and its layer, then the image layers nothing else uses any
    /// more. A mounted container is refused (the driver's `Busy`) and stays as it was.
    pub fn remove_container(&self, name: &str) -> Result<ContainerRemoval> {
        let old = self
            .db
            .set_container_state(name, ContainerState::Removing)?;
        graphdriver_kit::failpoint::hit("image.container.rm.after-record");
        match self.driver.remove(&old.name) {
            Ok(()) | Err(DriverError::NotFound(_)) => {}
            Err(source @ (DriverError::Busy { .. } | DriverError::HasChildren { .. })) => {
                let error = driver_err("remove", &old.name, source);
                return match self.db.set_container_state(name, old.state) {
                    Ok(_) => Err(error),
                    Err(rollback) => Err(rollback_failed(error, rollback)),
                };
            }
            // Left in state `Removing`: the next open tries again.
            Err(source) => return Err(driver_err("remove", &old.name, source)),
        }
        let orphans = self.db.delete_container(name)?;
        let LayerRemoval { removed, kept } = self.remove_layers(&orphans)?;
        Ok(ContainerRemoval {
            container: ContainerRecord {
                state: ContainerState::Removing,
                ..old
            },
            removed,
            kept,
        })
    }

    /// Removes what interrupted creates and removes left: each container not in state
    /// `Created`, with its layer. A layer the driver will not remove yet (mounted) keeps its
    /// record for the next open.
    pub(crate) fn sweep_containers(&self) -> Result<()> {
        for c in self.db.containers()? {
            if c.state == ContainerState::Created {
                continue;
            }
            match self.driver.remove(&c.name) {
                Ok(()) | Err(DriverError::NotFound(_)) => {
                    // Its orphaned image layers are pending now; the pending sweep follows.
                    self.db.delete_container(c.name.as_str())?;
                }
                Err(DriverError::Busy { .. } | DriverError::HasChildren { .. }) => {}
                Err(source) => return Err(driver_err("remove", &c.name, source)),
            }
        }
        Ok(())
    }

    /// Makes image `image` (replacing an image of that name) from container `name`: its
    /// image's layers plus a new layer holding the container's changes, applied from the
    /// container's diff, and a config with that layer's DiffID and a history entry added.
    /// The container stays. All or nothing, as an import.
    pub fn commit_container(&self, name: &str, image: &str) -> Result<ImageRecord> {
        let target = ImageName::new(image)?;
        let c = self.container(name)?;
        let config = self
            .db
            .config(&c.image_id)?
            .ok_or_else(|| ImageError::Invalid {
                entry: c.image_id.to_string(),
                reason: "the store has no copy of the container's image config".to_owned(),
            })?;
        let tmp = self
            .dir()
            .join(format!("commit-{}-{}.tar", c.name, std::process::id()));
        let result = self.commit_from(&c, &config, target, &tmp);
        let _ = std::fs::remove_file(&tmp);
        result
    }

    fn commit_from(
        &self,
        c: &ContainerRecord,
        config: &[u8],
        target: ImageName,
        tmp: &Path,
    ) -> Result<ImageRecord> {
        let (diff_id, tar_len) = self.write_diff(&c.name, tmp)?;
        let mut diff_ids: Vec<Digest> = c.layers.iter().map(|l| l.diff_id.clone()).collect();
        diff_ids.push(diff_id.clone());
        let chain_id = chain_ids(&diff_ids).pop().expect("at least the new layer");
        let id = layer_id(&chain_id)?;
        let depth = c.layers.len() as u64;
        let mut created = None;
        let size = if self.driver.exists(&id) {
            // The same changes committed before on the same image: the layer is shared.
            match self.known_layers()?.get(&chain_id) {
                Some(rec) => rec.size,
                None => self
                    .driver
                    .diff_size(&id, None)
                    .map_err(|source| driver_err("measure", &id, source))?,
            }
        } else {
            self.db.add_pending(&chain_id, depth)?;
            if let Err(source) =
                self.driver
                    .create(&id, c.parent_layer()?.as_ref(), &CreateOpts::default())
            {
                self.db.clear_pending(std::slice::from_ref(&chain_id))?;
                return Err(driver_err("create", &id, source));
            }
            created = Some((chain_id.clone(), depth));
            let mut file =
                BufReader::new(File::open(tmp).map_err(|e| ImageError::io("open", tmp, e))?);
            match self.driver.apply_diff(&id, None, &mut file) {
                Ok(size) => size,
                Err(source) => {
                    let error = driver_err("apply", &id, source);
                    return match self.remove_layers(&[(chain_id, depth)]) {
                        Ok(_) => Err(error),
                        Err(rollback) => Err(rollback_failed(error, rollback)),
                    };
                }
            }
        };
        let now = SystemTime::now();
        let created_at = humantime::format_rfc3339_seconds(now).to_string();
        let config = committed_config(config, &diff_id, &created_at, c)?;
        let config_digest = Digest::of(&config);
        let mut layers = c.layers.clone();
        layers.push(LayerRecord {
            chain_id: chain_id.clone(),
            diff_id: diff_id.clone(),
            blob: diff_id,
            media_type: Some(layer_media_type(Compression::None).to_owned()),
            compressed_size: tar_len,
            size,
        });
        let record = ImageRecord {
            name: target,
            manifest: None,
            config: config_digest.clone(),
            created: Some(created_at),
            imported: now,
            layers,
        };
        graphdriver_kit::failpoint::hit("image.commit.before-record");
        match self
            .db
            .commit_images(std::slice::from_ref(&record), &[(&config_digest, &config)])
        {
            Ok(orphans) => {
                self.remove_layers(&orphans)?;
                Ok(record)
            }
            Err(error) => match created.map(|p| self.remove_layers(&[p])) {
                Some(Err(rollback)) => Err(rollback_failed(error, rollback)),
                _ => Err(error),
            },
        }
    }

    /// Writes the container's diff to `path`; returns its digest (the new layer's DiffID)
    /// and length.
    fn write_diff(&self, id: &LayerId, path: &Path) -> Result<(Digest, u64)> {
        let mut diff = self
            .driver
            .diff(id, None)
            .map_err(|source| driver_err("diff", id, source))?;
        let file = File::create(path).map_err(|e| ImageError::io("create", path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut h = Sha256::new();
        let mut len = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match diff.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ImageError::BlobRead {
                        blob: format!("diff of {id}"),
                        source,
                    })
                }
            };
            h.update(&buf[..n]);
            len += n as u64;
            out.write_all(&buf[..n])
                .map_err(|e| ImageError::io("write", path, e))?;
        }
        out.flush().map_err(|e| ImageError::io("write", path, e))?;
        Ok((Digest::from_hasher(h), len))
    }
}

/// The image config of a commit: `base` with the new layer's DiffID appended to
/// `rootfs.diff_ids`, a history entry for it, and `created` set to now.
fn committed_config(
    base: &[u8],
    diff_id: &Digest,
    created: &str,
    c: &ContainerRecord,
) -> Result<Vec<u8>> {
    let malformed = |source| ImageError::Malformed {
        entry: c.image_id.to_string(),
        source,
    };
    let invalid = |reason: &str| ImageError::Invalid {
        entry: c.image_id.to_string(),
        reason: reason.to_owned(),
    };
    let mut v: Value = serde_json::from_slice(base).map_err(malformed)?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| invalid("the config is not a JSON object"))?;
    obj.insert("created".to_owned(), json!(created));
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    let ids = rootfs
        .get_mut("diff_ids")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| invalid("the config has no rootfs.diff_ids list"))?;
    ids.push(json!(diff_id.as_str()));
    let history = obj.entry("history").or_insert_with(|| json!([]));
    if let Some(h) = history.as_array_mut() {
        h.push(json!({
            "created": created,
            "created_by": format!("graphctl container commit {}", c.name),
        }));
    }
    serde_json::to_vec(&v).map_err(malformed)
}

fn rollback_failed(error: ImageError, rollback: ImageError) -> ImageError {
    ImageError::RollbackFailed {
        error: Box::new(error),
        rollback: Box::new(rollback),
    }
}
