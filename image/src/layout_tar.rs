//! Writing an image as an OCI image layout tar, byte for byte the same for the same layers.
//!
//! Each layer is the driver's diff (deterministic by the driver contract) compressed with
//! fixed settings, read once: it is compressed straight into the output behind a placeholder
//! tar header, which is written once its digest and length are known (the output is a file,
//! so it can seek back). The documents that name the blobs come after them. Nothing is
//! written to a temporary file but the output itself.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use graphdriver_api::GraphDriver;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::chain_id::layer_id;
use crate::manifest::REF_NAME;
use crate::{Compression, Digest, ImageError, ImageRecord, Result};

/// What [`ImageStore::save`](crate::ImageStore::save) wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveReport {
    /// The manifest's digest.
    pub manifest: Digest,
    /// The config's digest (the stored config, with `rootfs.diff_ids` rewritten when the
    /// driver's diffs are not the imported tars byte for byte).
    pub config: Digest,
    /// The layer blobs, base first.
    pub layers: Vec<Digest>,
}

/// gzip level and zstd level used when saving: fixed, so output is reproducible.
const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

/// Hashes and counts what passes through into borrowed state.
struct HashTee<'h, R> {
    inner: R,
    hasher: &'h mut Sha256,
    count: &'h mut u64,
}

impl<R: Read> Read for HashTee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        *self.count += n as u64;
        Ok(n)
    }
}

/// A reader that fills every buffer it is given unless the stream ends: what it returns for
/// each read depends on the bytes only, never on how the source happened to deliver them (a
/// pipe from the export thread hands out whatever it has). A compressor's output depends on
/// the sizes of the reads it sees (gzip's did: two saves of one layer gave different blobs),
/// and `save` compresses each layer twice and needs the same bytes both times.
struct Filled<R>(R);

impl<R: Read> Read for Filled<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.0.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

fn compressor<'a>(r: Box<dyn Read + 'a>, c: Compression) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => r,
        Compression::Gzip => Box::new(flate2::read::GzEncoder::new(
            r,
            flate2::Compression::new(GZIP_LEVEL),
        )),
        Compression::Zstd => Box::new(zstd::stream::read::Encoder::new(r, ZSTD_LEVEL)?),
    })
}

/// The OCI media type of a layer compressed as `c`.
pub fn layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// A layer blob's digests and length.
struct BlobSums {
    blob: Digest,
    len: u64,
    diff_id: Digest,
}

/// Streams layer `index` of `image` (its diff against its parent) through the compressor
/// into `sink`, and returns the sums.
fn stream_layer(
    driver: &dyn GraphDriver,
    image: &ImageRecord,
    index: usize,
    c: Compression,
    sink: &mut dyn Write,
    path: &Path,
) -> Result<BlobSums> {
    let l = &image.layers[index];
    let id = layer_id(&l.chain_id)?;
    let diff = driver
        .diff(&id, None)
        .map_err(|source| ImageError::Driver {
            op: "diff",
            layer: id.clone(),
            source,
        })?;
    let (mut diff_h, mut diff_n) = (Sha256::new(), 0u64);
    let (mut blob_h, mut blob_n) = (Sha256::new(), 0u64);
    {
        let tee = HashTee {
            inner: Filled(diff),
            hasher: &mut diff_h,
            count: &mut diff_n,
        };
        let enc = compressor(Box::new(tee), c).map_err(|source| ImageError::BlobRead {
            blob: id.to_string(),
            source,
        })?;
        let mut out = HashTee {
            inner: enc,
            hasher: &mut blob_h,
            count: &mut blob_n,
        };
        let mut buf = vec![0u8; 1 << 17];
        loop {
            let n = match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ImageError::BlobRead {
                        blob: id.to_string(),
                        source,
                    })
                }
            };
            sink.write_all(&buf[..n])
                .map_err(|e| ImageError::io("write", path, e))?;
        }
    }
    Ok(BlobSums {
        blob: Digest::from_hasher(blob_h),
        len: blob_n,
        diff_id: Digest::from_hasher(diff_h),
    })
}

/// Writes `image` as an OCI image layout tar to `out` in one pass, and returns what it
/// wrote and where the tar ends (`out` may hold more after that, to be truncated: a layer
/// whose blob an earlier layer already wrote is written, then overwritten).
///
/// Each layer blob is compressed straight into the tar behind a placeholder header, which
/// is filled in once the blob's digest and length are known; then come the config, the
/// manifest, `index.json` and `oci-layout`. `path` names `out` in errors.
pub(crate) fn write_layout_tar<W: Write + Seek>(
    driver: &dyn GraphDriver,
    image: &ImageRecord,
    config: &[u8],
    c: Compression,
    out: &mut W,
    path: &Path,
) -> Result<(SaveReport, u64)> {
    let write_err = |e: io::Error| ImageError::io("write", path, e);
    for dir in ["blobs/", "blobs/sha256/"] {
        let h = named_header(tar::EntryType::Directory, 0o755, 0, dir).map_err(write_err)?;
        out.write_all(h.as_bytes()).map_err(write_err)?;
    }
    let mut sums: Vec<BlobSums> = Vec::with_capacity(image.layers.len());
    for i in 0..image.layers.len() {
        let at = out.stream_position().map_err(write_err)?;
        out.write_all(&[0u8; BLOCK]).map_err(write_err)?;
        let s = stream_layer(driver, image, i, c, out, path)?;
        let pad = (BLOCK as u64 - s.len % BLOCK as u64) % BLOCK as u64;
        out.write_all(&[0u8; BLOCK][..pad as usize])
            .map_err(write_err)?;
        if sums.iter().any(|p| p.blob == s.blob) {
            // Written already: the next entry goes where this one began.
            out.seek(SeekFrom::Start(at)).map_err(write_err)?;
        } else {
            let end = out.stream_position().map_err(write_err)?;
            let h = named_header(tar::EntryType::Regular, 0o644, s.len, &s.blob.blob_path())
                .map_err(write_err)?;
            out.seek(SeekFrom::Start(at)).map_err(write_err)?;
            out.write_all(h.as_bytes()).map_err(write_err)?;
            out.seek(SeekFrom::Start(end)).map_err(write_err)?;
        }
        sums.push(s);
    }

    let diff_ids: Vec<&Digest> = sums.iter().map(|s| &s.diff_id).collect();
    let same = image
        .layers
        .iter()
        .map(|l| &l.diff_id)
        .eq(diff_ids.iter().copied());
    let config: Vec<u8> = if same {
        config.to_vec()
    } else {
        let mut v: serde_json::Value =
            serde_json::from_slice(config).map_err(|source| ImageError::Malformed {
                entry: image.config.to_string(),
                source,
            })?;
        v["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        serde_json::to_vec(&v).map_err(|source| ImageError::Malformed {
            entry: image.config.to_string(),
            source,
        })?
    };
    let config_digest = Digest::of(&config);
    let layers: Vec<serde_json::Value> = sums
        .iter()
        .map(|s| json!({"mediaType": layer_media_type(c), "digest": s.blob, "size": s.len}))
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers,
    }))
    .map_err(|source| ImageError::Malformed {
        entry: "manifest".to_owned(),
        source,
    })?;
    let manifest_digest = Digest::of(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {REF_NAME: image.name},
        }],
    }))
    .map_err(|source| ImageError::Malformed {
        entry: "index.json".to_owned(),
        source,
    })?;

    let mut tar = tar::Builder::new(&mut *out);
    let mut put = |name: &str, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        tar.append_data(&mut h, name, data).map_err(write_err)
    };
    put(&config_digest.blob_path(), &config)?;
    put(&manifest_digest.blob_path(), &manifest)?;
    put("index.json", &index)?;
    put("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    tar.into_inner().map_err(write_err)?;
    let end = out.stream_position().map_err(write_err)?;
    Ok((
        SaveReport {
            manifest: manifest_digest,
            config: config_digest,
            layers: sums.into_iter().map(|s| s.blob).collect(),
        },
        end,
    ))
}

const BLOCK: usize = 512;

/// A ustar header naming `name` (short enough for the 100-byte name field), checksummed.
fn named_header(kind: tar::EntryType, mode: u32, size: u64, name: &str) -> io::Result<tar::Header> {
    let mut h = header(kind, mode, size);
    h.set_path(name)?;
    h.set_cksum();
    Ok(h)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out the bytes in chunks whose sizes follow `seed`, as a pipe would.
    struct Chunky<'a> {
        data: &'a [u8],
        state: u64,
    }

    impl Read for Chunky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.state = self.state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let n = ((self.state >> 33) as usize % 70_000 + 1)
                .min(buf.len())
                .min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn compressed(data: &[u8], seed: u64, c: Compression) -> Vec<u8> {
        let src = Filled(Chunky { data, state: seed });
        let mut out = Vec::new();
        compressor(Box::new(src), c)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn a_layer_compresses_to_the_same_bytes_however_its_reads_are_cut() {
        // compressible but not trivially: a few MiB of structured noise
        let mut data = Vec::new();
        let mut x = 1u64;
        while data.len() < 4 << 20 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            data.extend_from_slice(format!("entry {} {}\n", x >> 50, x % 1000).as_bytes());
        }
        for c in [Compression::Gzip, Compression::Zstd] {
            let a = compressed(&data, 1, c);
            let b = compressed(&data, 2, c);
            assert!(
                a == b,
                "{c:?}: two reads of one stream compressed differently"
            );
        }
    }
}
