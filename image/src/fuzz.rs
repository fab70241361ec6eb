//! Entry points for the fuzz targets in `fuzz/` (feature `fuzz`): the store's parsers on
//! their own, without a driver. Not a stable API.

use std::io;
use std::path::Path;

use crate::image_archive::ImageArchive;
use crate::import_plan::plan;
use crate::layer_stream::LayerStream;
use crate::{ImageError, ImportLimits, Result};

/// Decompresses `blob` (compression sniffed) under `limits` and returns the uncompressed
/// length, or the typed error an import would give. Never more than
/// `limits.max_layer_bytes` come out.
pub fn layer_stream(blob: &[u8], limits: ImportLimits) -> Result<u64> {
    let blob_err = |source| ImageError::BlobRead {
        blob: "fuzz".to_owned(),
        source,
    };
    let mut s = LayerStream::new(blob, None, limits).map_err(blob_err)?;
    let copied = io::copy(&mut s, &mut io::sink());
    if let Some(fault) = s.fault("fuzz") {
        return Err(fault);
    }
    copied.map_err(|source| ImageError::Decompression {
        blob: "fuzz".to_owned(),
        source,
    })
}

/// Reads the image archive at `path` (a directory or a tar) as an import would before it
/// creates a layer: every document parsed and checked against its digest, every layer blob
/// found, DiffIDs and ChainIDs computed. Returns how many images it holds.
pub fn plan_archive(path: &Path, limits: &ImportLimits) -> Result<usize> {
    let archive = ImageArchive::open(path)?;
    Ok(plan(&archive, path, limits)?.len())
}
