//! The image store: imports archives into driver layers named by ChainID, and keeps the
//! records that say which images use which layers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use graphdriver_api::{CreateOpts, DriverError, GraphDriver, LayerId};
use graphdriver_kit::fs::chunks::{self, Filled};

use crate::chain_id::layer_id;
use crate::image_archive::ImageArchive;
use crate::import_plan::{plan, ImagePlan, LayerPlan};
use crate::layer_stream::{HashingReader, LayerStream};
use crate::layout_tar::{write_layout_tar, SaveReport};
use crate::record_db::{Pending, RecordDb};
use crate::{
    Compression, Digest, ImageError, ImageName, ImageRecord, ImportLimits, LayerRecord, Result,
};

/// The database file in the store's directory.
pub const DB_FILE: &str = "images.redb";

/// Images above a [`GraphDriver`].
///
/// Each image layer is the driver layer whose id is the hex of its ChainID, so a layer is
/// applied once and shared by every image that has it. Records live in one redb file;
/// a layer is recorded as pending before it is created, and an image record names only
/// layers that exist, so a crash never leaves a record naming a missing layer, and
/// [`open`](Self::open) removes pending layers no image names.
#[derive(Debug)]
pub struct ImageStore {
    pub(crate) driver: Arc<dyn GraphDriver>,
    pub(crate) db: RecordDb,
    dir: PathBuf,
    limits: ImportLimits,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The images recorded, one per name (or one per unnamed image).
    pub images: Vec<ImageRecord>,
    /// The layers applied (ChainIDs), in order.
    pub applied: Vec<Digest>,
    /// The layers that were there already and were not applied again ("Already exists").
    pub existing: Vec<Digest>,
}

/// What an import reports as it goes, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportEvent<'a> {
    /// A layer (named by its ChainID) is about to be applied from a blob of `size` bytes
    /// (when the archive says).
    Applying {
        /// The layer.
        chain_id: &'a Digest,
        /// The blob's length.
        size: Option<u64>,
    },
    /// Bytes of the layer's blob read so far (reported about every MiB).
    Read {
        /// The layer.
        chain_id: &'a Digest,
        /// Blob bytes read.
        bytes: u64,
    },
    /// The layer is applied and verified.
    Applied {
        /// The layer.
        chain_id: &'a Digest,
    },
    /// The layer was there already and is not applied again.
    Exists {
        /// The layer.
        chain_id: &'a Digest,
    },
}

/// Counts the blob bytes read and reports them.
struct Reporting<'p, 'c, R> {
    inner: R,
    read: u64,
    reported: u64,
    chain_id: &'c Digest,
    progress: &'p mut dyn FnMut(ImportEvent<'_>),
}

impl<R: std::io::Read> std::io::Read for Reporting<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read - self.reported >= 1 << 20 || (n == 0 && self.read > self.reported) {
            self.reported = self.read;
            (self.progress)(ImportEvent::Read {
                chain_id: self.chain_id,
                bytes: self.read,
            });
        }
        Ok(n)
    }
}

/// How many chunks of a layer's uncompressed tar may wait for the apply.
const LAYER_CHUNKS_IN_FLIGHT: usize = 4;

/// Applies `stream` to the layer `id` on a second thread, which also takes the DiffID, while
/// this one decompresses and hashes the blob: the work splits in two, as `tar -xzf` runs gzip
/// beside tar. A read or decompression error reaches the apply as an error (never as an early
/// end), and the stream keeps it for [`LayerStream::fault`]. Returns the driver's answer and,
/// after a successful apply, the DiffID of the whole uncompressed stream (what the apply read
/// and the rest, drained) or why the rest could not be read.
fn apply_pipelined<R: std::io::Read>(
    driver: &dyn GraphDriver,
    id: &LayerId,
    stream: &mut LayerStream<R>,
) -> std::result::Result<(u64, std::io::Result<Digest>), DriverError> {
    std::thread::scope(|s| {
        let (mut feed, chunks) = chunks::channel(LAYER_CHUNKS_IN_FLIGHT);
        let apply = std::thread::Builder::new()
            .name("graphdriver-apply".into())
            .spawn_scoped(s, move || {
                let mut tar = HashingReader::new(chunks);
                let size = driver.apply_diff(id, None, &mut tar)?;
                let drained = std::io::copy(&mut tar, &mut std::io::sink());
                Ok((size, drained.map(|_| tar.digest())))
            })
            .map_err(|e| DriverError::io("spawn apply thread for", id.as_str(), e))?;
        let failed = loop {
            match feed.fill_from(stream) {
                Ok(Filled::Sent(_)) => {}
                // a reader gone means that the apply failed
                Ok(Filled::End | Filled::ReaderGone) => break None,
                Err(e) => break Some(e),
            }
        };
        match failed {
            // the stream keeps its own copy of the error for `fault`
            Some(e) => feed.fail(e),
            None => drop(feed), // the end of the tar for the apply
        }
        apply
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// What a removal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveReport {
    /// The removed image.
    pub image: ImageRecord,
    /// The layers removed with it (no other image used them), top first.
    pub removed: Vec<LayerId>,
    /// Layers no image uses any more that the driver would not remove yet (mounted, or with
    /// a layer from outside the store on top); they are removed by a later
    /// [`ImageStore::open`] once they can be.
    pub kept: Vec<LayerId>,
}

/// The outcome of removing pending layers.
#[derive(Debug, Default)]
pub(crate) struct LayerRemoval {
    pub removed: Vec<LayerId>,
    pub kept: Vec<LayerId>,
}

impl ImageStore {
    /// Opens the store in `dir` (created if needed) above `driver`, removes the containers an
    /// interrupted create or remove left, then the pending layers of an interrupted import or
    /// removal that no image or container names.
    pub fn open(dir: &Path, driver: Arc<dyn GraphDriver>) -> Result<ImageStore> {
        std::fs::create_dir_all(dir).map_err(|e| ImageError::io("create directory", dir, e))?;
        let db = RecordDb::open(&dir.join(DB_FILE))?;
        let store = ImageStore {
            driver,
            db,
            dir: dir.to_owned(),
            limits: ImportLimits::default(),
        };
        store.sweep_containers()?;
        store.sweep_pending()?;
        Ok(store)
    }

    /// The same store with other import limits.
    pub fn with_limits(mut self, limits: ImportLimits) -> ImageStore {
        self.limits = limits;
        self
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The driver below the store.
    pub fn driver(&self) -> &Arc<dyn GraphDriver> {
        &self.driver
    }

    /// Imports every image of an OCI image layout (a directory or a tar of one) or a
    /// `docker save` tar, and returns their records.
    pub fn import(&self, path: &Path) -> Result<Vec<ImageRecord>> {
        Ok(self.import_report(path)?.images)
    }

    /// [`import`](Self::import), also saying which layers were applied and which existed.
    ///
    /// All or nothing: every document and digest is checked before the first layer is
    /// created, every layer is verified as it is applied, and on any failure the layers this
    /// import created are removed and no image is recorded.
    pub fn import_report(&self, path: &Path) -> Result<ImportReport> {
        self.import_with_progress(path, &mut |_| {})
    }

    /// [`import_report`](Self::import_report), telling `progress` about each layer as it is
    /// applied (or found).
    pub fn import_with_progress(
        &self,
        path: &Path,
        progress: &mut dyn FnMut(ImportEvent<'_>),
    ) -> Result<ImportReport> {
        let archive = ImageArchive::open(path)?;
        let plans = plan(&archive, path, &self.limits)?;
        let mut created: Vec<(Digest, u64)> = Vec::new();
        let mut report = ImportReport {
            images: Vec::new(),
            applied: Vec::new(),
            existing: Vec::new(),
        };
        let result = self.apply_plans(&archive, &plans, &mut created, &mut report, progress);
        let orphans = match result {
            Ok(records) => {
                let configs: Vec<(&Digest, &[u8])> = plans
                    .iter()
                    .map(|p| (&p.config, p.config_bytes.as_slice()))
                    .collect();
                self.db
                    .commit_images(&records, &configs)
                    .map(|o| (records, o))
            }
            Err(e) => Err(e),
        };
        match orphans {
            Ok((records, orphans)) => {
                report.images = records;
                // Layers only a replaced image used; a failure here is retried at open.
                self.remove_layers(&orphans)?;
                Ok(report)
            }
            Err(error) => {
                created.reverse();
                match self.remove_layers(&created) {
                    Ok(_) => Err(error),
                    Err(rollback) => Err(ImageError::RollbackFailed {
                        error: Box::new(error),
                        rollback: Box::new(rollback),
                    }),
                }
            }
        }
    }

    fn apply_plans(
        &self,
        archive: &ImageArchive,
        plans: &[ImagePlan],
        created: &mut Vec<(Digest, u64)>,
        report: &mut ImportReport,
        progress: &mut dyn FnMut(ImportEvent<'_>),
    ) -> Result<Vec<ImageRecord>> {
        let known = self.known_layers()?;
        let mut done: BTreeMap<Digest, LayerRecord> = BTreeMap::new();
        let mut records = Vec::new();
        let imported = SystemTime::now();
        for p in plans {
            let mut layers = Vec::with_capacity(p.layers.len());
            let mut parent: Option<LayerId> = None;
            for (depth, l) in p.layers.iter().enumerate() {
                let id = layer_id(&l.chain_id)?;
                let exists = ImportEvent::Exists {
                    chain_id: &l.chain_id,
                };
                let rec = if let Some(rec) = done.get(&l.chain_id) {
                    report.existing.push(l.chain_id.clone());
                    progress(exists);
                    reused_record(l, rec)
                } else if let (true, Some(rec)) = (self.driver.exists(&id), known.get(&l.chain_id))
                {
                    report.existing.push(l.chain_id.clone());
                    progress(exists);
                    reused_record(l, rec)
                } else if self.driver.exists(&id) {
                    // A layer no record names yet (another tool made it): trusted by its name.
                    report.existing.push(l.chain_id.clone());
                    progress(exists);
                    let size = self
                        .driver
                        .diff_size(&id, None)
                        .map_err(|source| driver_err("measure", &id, source))?;
                    LayerRecord {
                        chain_id: l.chain_id.clone(),
                        diff_id: l.diff_id.clone(),
                        blob: l.blob.clone().unwrap_or_else(|| l.diff_id.clone()),
                        media_type: l.media_type.clone(),
                        compressed_size: l.size.unwrap_or(0),
                        size,
                    }
                } else {
                    self.db.add_pending(&l.chain_id, depth as u64)?;
                    if let Err(source) =
                        self.driver
                            .create(&id, parent.as_ref(), &CreateOpts::default())
                    {
                        // Nothing was created: the pending record must not outlive it (the
                        // layer may be another's, made since `exists` was asked).
                        self.db.clear_pending(std::slice::from_ref(&l.chain_id))?;
                        return Err(driver_err("create", &id, source));
                    }
                    created.push((l.chain_id.clone(), depth as u64));
                    progress(ImportEvent::Applying {
                        chain_id: &l.chain_id,
                        size: l.size,
                    });
                    let rec = self.apply_layer(archive, &id, depth, l, progress)?;
                    graphdriver_kit::failpoint::hit("image.import.after-layer");
                    progress(ImportEvent::Applied {
                        chain_id: &l.chain_id,
                    });
                    report.applied.push(l.chain_id.clone());
                    rec
                };
                done.insert(l.chain_id.clone(), rec.clone());
                layers.push(rec);
                parent = Some(id);
            }
            let names = if p.names.is_empty() {
                let unnamed = p.manifest.as_ref().unwrap_or(&p.config);
                vec![ImageName::new(unnamed.as_str())?]
            } else {
                p.names.clone()
            };
            for name in names {
                records.push(ImageRecord {
                    name,
                    manifest: p.manifest.clone(),
                    config: p.config.clone(),
                    created: p.created.clone(),
                    imported,
                    layers: layers.clone(),
                });
            }
        }
        Ok(records)
    }

    /// Streams one layer blob into the driver layer `id` (created, empty of its own) and
    /// checks its digests.
    fn apply_layer(
        &self,
        archive: &ImageArchive,
        id: &LayerId,
        index: usize,
        l: &LayerPlan,
        progress: &mut dyn FnMut(ImportEvent<'_>),
    ) -> Result<LayerRecord> {
        let file = archive.open_file(&l.path, &l.entry)?;
        let reader = Reporting {
            inner: file.reader,
            read: 0,
            reported: 0,
            chain_id: &l.chain_id,
            progress,
        };
        let mut stream =
            LayerStream::new(reader, l.compression, self.limits).map_err(|source| {
                ImageError::BlobRead {
                    blob: l.path.clone(),
                    source,
                }
            })?;
        let applied = apply_pipelined(&*self.driver, id, &mut stream);
        if let Some(fault) = stream.fault(&l.path) {
            return Err(fault);
        }
        let (size, diff_id) = applied.map_err(|source| driver_err("apply", id, source))?;
        let diff_id = diff_id.map_err(|source| ImageError::Decompression {
            blob: l.path.clone(),
            source,
        })?;
        let sums = stream.sums();
        if let Some(expected) = &l.blob {
            if &sums.blob != expected {
                return Err(ImageError::DigestMismatch {
                    blob: l.path.clone(),
                    expected: expected.clone(),
                    actual: sums.blob,
                });
            }
        }
        if let Some(expected) = l.size {
            if sums.compressed != expected {
                return Err(ImageError::SizeMismatch {
                    blob: l.path.clone(),
                    expected,
                    actual: sums.compressed,
                });
            }
        }
        if diff_id != l.diff_id {
            return Err(ImageError::DiffIdMismatch {
                index,
                blob: l.path.clone(),
                expected: l.diff_id.clone(),
                actual: diff_id,
            });
        }
        Ok(LayerRecord {
            chain_id: l.chain_id.clone(),
            diff_id: l.diff_id.clone(),
            blob: sums.blob,
            media_type: l.media_type.clone(),
            compressed_size: sums.compressed,
            size,
        })
    }

    /// What the records already say about each layer.
    pub(crate) fn known_layers(&self) -> Result<BTreeMap<Digest, LayerRecord>> {
        Ok(self
            .db
            .images()?
            .into_iter()
            .flat_map(|r| r.layers)
            .map(|l| (l.chain_id.clone(), l))
            .collect())
    }

    /// Removes pending layers, top first, forgetting each once it is gone. A layer the driver
    /// will not remove yet (a layer outside the store on top of it, or mounted) stays pending
    /// for a later [`open`](Self::open), as do its parents.
    pub(crate) fn remove_layers(&self, layers: &[Pending]) -> Result<LayerRemoval> {
        let mut out = LayerRemoval::default();
        for (chain_id, _) in layers {
            let id = layer_id(chain_id)?;
            match self.driver.remove(&id) {
                Ok(()) => out.removed.push(id),
                Err(DriverError::NotFound(_)) => {}
                Err(DriverError::HasChildren { .. } | DriverError::Busy { .. }) => {
                    out.kept.push(id);
                    continue;
                }
                Err(source) => return Err(driver_err("remove", &id, source)),
            }
            self.db.clear_pending(std::slice::from_ref(chain_id))?;
        }
        Ok(out)
    }

    /// Removes the pending layers no image names (an import or removal was interrupted),
    /// deepest first. A layer the driver will not remove yet (it has children outside the
    /// store, or is mounted) stays pending for the next open.
    fn sweep_pending(&self) -> Result<()> {
        let named = self.db.referenced()?;
        let mut pending = self.db.pending()?;
        pending.sort_by_key(|p| std::cmp::Reverse(p.1));
        for (chain_id, _) in pending {
            if named.contains(&chain_id) {
                self.db.clear_pending(std::slice::from_ref(&chain_id))?;
                continue;
            }
            let id = layer_id(&chain_id)?;
            match self.driver.remove(&id) {
                Ok(()) | Err(DriverError::NotFound(_)) => {
                    self.db.clear_pending(std::slice::from_ref(&chain_id))?;
                }
                Err(DriverError::HasChildren { .. } | DriverError::Busy { .. }) => {}
                Err(source) => return Err(driver_err("remove", &id, source)),
            }
        }
        Ok(())
    }

    /// Every image, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        self.db.images()
    }

    /// The image named `name`.
    pub fn get(&self, name: &str) -> Result<ImageRecord> {
        self.db
            .image(name)?
            .ok_or_else(|| ImageError::NotFound(name.to_owned()))
    }

    /// The image's layers, top first (as `docker history` shows them), each with its size
    /// and DiffID.
    pub fn history(&self, name: &str) -> Result<Vec<LayerRecord>> {
        let mut layers = self.get(name)?.layers;
        layers.reverse();
        Ok(layers)
    }

    /// Removes the image record, then the layers no other image or container uses, top first.
    /// Layers are marked pending in the same transaction that removes the record, so an
    /// interrupted removal is finished at the next [`open`](Self::open). An image that
    /// containers were created from is refused with [`ImageError::InUse`].
    pub fn remove(&self, name: &str) -> Result<RemoveReport> {
        let (image, orphans) = self
            .db
            .remove_image(name)?
            .ok_or_else(|| ImageError::NotFound(name.to_owned()))?;
        graphdriver_kit::failpoint::hit("image.remove.after-record");
        let LayerRemoval { removed, kept } = self.remove_layers(&orphans)?;
        Ok(RemoveReport {
            image,
            removed,
            kept,
        })
    }

    /// Writes the image as an OCI image layout tar at `out` (replaced only when the whole tar
    /// is written), its layers the driver's diffs compressed as `compression`. The same
    /// layers give the same bytes. The image is named in `index.json` by
    /// `org.opencontainers.image.ref.name`, so importing the tar gives it the same name.
    pub fn save(&self, name: &str, out: &Path, compression: Compression) -> Result<SaveReport> {
        let image = self.get(name)?;
        let config = self
            .db
            .config(&image.config)?
            .ok_or_else(|| ImageError::Invalid {
                entry: image.config.to_string(),
                reason: "the store has no copy of this config".to_owned(),
            })?;
        let mut tmp = out.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let file = std::fs::File::create(&tmp).map_err(|e| ImageError::io("create", &tmp, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let written = write_layout_tar(
            self.driver.as_ref(),
            &image,
            &config,
            compression,
            &mut w,
            out,
        )
        .and_then(|(report, end)| {
            let file = w
                .into_inner()
                .map_err(|e| ImageError::io("write", &tmp, e.into_error()))?;
            file.set_len(end)
                .map_err(|e| ImageError::io("truncate", &tmp, e))?;
            file.sync_all()
                .map_err(|e| ImageError::io("sync", &tmp, e))?;
            std::fs::rename(&tmp, out).map_err(|e| ImageError::io("rename", &tmp, e))?;
            Ok(report)
        });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// How many images and containers use each layer (counted from the records, never
    /// stored).
    pub fn layer_references(&self) -> Result<BTreeMap<Digest, usize>> {
        let mut out = BTreeMap::new();
        let images = self.db.images()?.into_iter().map(|r| r.layers);
        let containers = self.db.containers()?.into_iter().map(|c| c.layers);
        for layers in images.chain(containers) {
            for l in layers {
                *out.entry(l.chain_id).or_insert(0) += 1;
            }
        }
        Ok(out)
    }
}

/// The record of a layer this image shares with one applied before: the size measured then,
/// the blob as this image's manifest names it.
fn reused_record(l: &LayerPlan, applied: &LayerRecord) -> LayerRecord {
    let same_blob = l.blob.is_none() || l.blob.as_ref() == Some(&applied.blob);
    LayerRecord {
        chain_id: l.chain_id.clone(),
        diff_id: l.diff_id.clone(),
        blob: l.blob.clone().unwrap_or_else(|| applied.blob.clone()),
        media_type: l.media_type.clone().or_else(|| applied.media_type.clone()),
        compressed_size: match l.size {
            Some(s) => s,
            None if same_blob => applied.compressed_size,
            None => 0,
        },
        size: applied.size,
    }
}

pub(crate) fn driver_err(op: &'static str, id: &LayerId, source: DriverError) -> ImageError {
    ImageError::Driver {
        op,
        layer: id.clone(),
        source,
    }
}
