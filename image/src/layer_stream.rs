//! A layer blob on its way into the driver: hashed as compressed bytes, decompressed as a
//! stream and held to the size limits. The uncompressed tar's hash (the DiffID) is taken
//! where the tar is read, with [`HashingReader`]: on the apply's thread, beside this one.
//!
//! The readers remember why they failed, so a failed `apply_diff` can be told apart: the
//! archive could not be read, the stream could not be decompressed, or a limit was hit.

use std::io::{self, BufRead, BufReader, Read};

use flate2::bufread::MultiGzDecoder;
use sha2::{Digest as _, Sha256};

use crate::{Digest, ImageError, ImportLimits};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (RFC 1952; several members are read as one stream).
    Gzip,
    /// zstd.
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Compression {
    /// The compression a layer media type names: `Some(None)` when the type does not say
    /// (sniff), `None` when it is not a layer type the store can apply.
    pub fn for_media_type(mt: &str) -> Option<Option<Compression>> {
        let layer_types = [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            "application/vnd.docker.image.rootfs.diff.tar",
            "application/vnd.docker.image.rootfs.foreign.diff.tar",
        ];
        for base in layer_types {
            if let Some(rest) = mt.strip_prefix(base) {
                return match rest {
                    "" => Some(Some(Compression::None)),
                    "+gzip" | ".gzip" => Some(Some(Compression::Gzip)),
                    "+zstd" | ".zstd" => Some(Some(Compression::Zstd)),
                    _ => None,
                };
            }
        }
        None
    }

    /// The compression the first bytes of a blob show.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Hashes and counts what passes through, and remembers the first read error.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    failed: Option<io::Error>,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            failed: None,
        }
    }
}

impl<R> HashingReader<R> {
    /// The digest of what has passed through.
    pub fn digest(&self) -> Digest {
        Digest::from_hasher(self.hasher.clone())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.count += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failed.get_or_insert(e);
                Err(copy)
            }
        }
    }
}

type Compressed<R> = BufReader<HashingReader<R>>;

enum Decoder<R: Read> {
    Plain(Compressed<R>),
    Gzip(Box<MultiGzDecoder<Compressed<R>>>),
    Zstd(zstd::stream::read::Decoder<'static, Compressed<R>>),
}

impl<R: Read> Decoder<R> {
    fn compressed(&self) -> &HashingReader<R> {
        match self {
            Decoder::Plain(r) => r.get_ref(),
            Decoder::Gzip(r) => r.get_ref().get_ref(),
            Decoder::Zstd(r) => r.get_ref().get_ref(),
        }
    }

    fn compressed_mut(&mut self) -> &mut HashingReader<R> {
        match self {
            Decoder::Plain(r) => r.get_mut(),
            Decoder::Gzip(r) => r.get_mut().get_mut(),
            Decoder::Zstd(r) => r.get_mut().get_mut(),
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

/// Why a layer stream stopped.
enum Fault {
    Decode(io::Error),
    TooLarge,
    Ratio,
}

/// A layer blob as the uncompressed tar the driver reads.
pub(crate) struct LayerStream<R: Read> {
    decoder: Decoder<R>,
    count: u64,
    limits: ImportLimits,
    fault: Option<Fault>,
}

/// The digest and size of a fully read layer blob.
pub(crate) struct StreamSums {
    pub blob: Digest,
    pub compressed: u64,
}

impl<R: Read> LayerStream<R> {
    /// Wraps `blob`, compressed as `compression` (sniffed from the first bytes when `None`).
    pub fn new(
        blob: R,
        compression: Option<Compression>,
        limits: ImportLimits,
    ) -> io::Result<Self> {
        let mut buffered = BufReader::with_capacity(1 << 17, HashingReader::new(blob));
        let compression = match compression {
            Some(c) => c,
            None => Compression::sniff(buffered.fill_buf()?),
        };
        let decoder = match compression {
            Compression::None => Decoder::Plain(buffered),
            Compression::Gzip => Decoder::Gzip(Box::new(MultiGzDecoder::new(buffered))),
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(buffered)?),
        };
        Ok(LayerStream {
            decoder,
            count: 0,
            limits,
            fault: None,
        })
    }

    /// The typed error for why the stream failed, if it did: the archive's read error first
    /// (the decoder sees it too), then the decoder's, then a limit.
    pub fn fault(&mut self, blob: &str) -> Option<ImageError> {
        if let Some(e) = self.decoder.compressed_mut().failed.take() {
            return Some(ImageError::BlobRead {
                blob: blob.to_owned(),
                source: e,
            });
        }
        match self.fault.take()? {
            Fault::Decode(source) => Some(ImageError::Decompression {
                blob: blob.to_owned(),
                source,
            }),
            Fault::TooLarge => Some(ImageError::LayerTooLarge {
                blob: blob.to_owned(),
                limit: self.limits.max_layer_bytes,
            }),
            Fault::Ratio => Some(ImageError::CompressionRatio {
                blob: blob.to_owned(),
                limit: self.limits.max_ratio,
            }),
        }
    }

    /// The blob's digest and size, once the stream has been read to its end.
    pub fn sums(&self) -> StreamSums {
        let compressed = self.decoder.compressed();
        StreamSums {
            blob: compressed.digest(),
            compressed: compressed.count,
        }
    }

    fn check_limits(&self) -> Option<Fault> {
        if self.count > self.limits.max_layer_bytes {
            return Some(Fault::TooLarge);
        }
        if self.count > self.limits.ratio_floor {
            let compressed = self.decoder.compressed().count.max(1);
            if self.count / compressed > self.limits.max_ratio {
                return Some(Fault::Ratio);
            }
        }
        None
    }
}

impl<R: Read> Read for LayerStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.fault.is_some() {
            return Err(io::Error::other("layer stream stopped"));
        }
        match self.decoder.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                if let Some(f) = self.check_limits() {
                    self.fault = Some(f);
                    return Err(io::Error::other("layer stream past its limit"));
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.fault = Some(Fault::Decode(e));
                Err(copy)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_map_to_compressions() {
        let oci = "application/vnd.oci.image.layer.v1.tar";
        assert_eq!(
            Compression::for_media_type(oci),
            Some(Some(Compression::None))
        );
        assert_eq!(
            Compression::for_media_type(&format!("{oci}+gzip")),
            Some(Some(Compression::Gzip))
        );
        assert_eq!(
            Compression::for_media_type(&format!("{oci}+zstd")),
            Some(Some(Compression::Zstd))
        );
        assert_eq!(
            Compression::for_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Some(Compression::Gzip))
        );
        assert_eq!(Compression::for_media_type("application/json"), None);
    }

    #[test]
    fn magic_bytes_pick_the_decoder() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
    }
}
