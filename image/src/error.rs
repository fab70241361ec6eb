//! The one error type of the image store.

use std::io;
use std::path::PathBuf;

use graphdriver_api::{DriverError, LayerId};

use crate::Digest;

/// The result of every image store operation.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Everything an [`ImageStore`](crate::ImageStore) operation can fail with.
///
/// Messages are lowercase with no trailing period and never repeat their cause: the cause is
/// in [`std::error::Error::source`]. A failed import leaves no layer and no image behind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A file operation failed.
    #[error("failed to {op} {}", path.display())]
    Io {
        /// The operation, as a verb phrase.
        op: &'static str,
        /// The path it acted on.
        path: PathBuf,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// The record database failed.
    #[error("image database {} failed to {op}", path.display())]
    Database {
        /// What was being done.
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },
    /// The records are damaged.
    #[error("corrupt image record {key:?}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// Why it could not be read.
        #[source]
        source: serde_json::Error,
    },
    /// The driver failed on one of the store's layers.
    #[error("driver failed to {op} layer {layer}")]
    Driver {
        /// The operation (`create`, `apply`, `remove`, ...).
        op: &'static str,
        /// The layer.
        layer: LayerId,
        /// The driver's error.
        #[source]
        source: DriverError,
    },
    /// The path is neither an OCI image layout nor a `docker save` archive.
    #[error("{} is not an image archive: {reason}", path.display())]
    NotAnImage {
        /// The path given to import.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A JSON document of the archive could not be parsed.
    #[error("malformed {entry}")]
    Malformed {
        /// The archive entry (or blob digest).
        entry: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A document parsed but says something the store cannot accept.
    #[error("invalid {entry}: {reason}")]
    Invalid {
        /// The archive entry (or blob digest).
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A string that should be a digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest {digest:?} in {entry}: {reason}")]
    InvalidDigest {
        /// The rejected string.
        digest: String,
        /// Where it was found.
        entry: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A path inside the archive tries to leave it (absolute, `..`, or a symlink outside).
    #[error("unsafe path {path:?} in {entry}")]
    UnsafePath {
        /// The path as written.
        path: String,
        /// Where it was found.
        entry: String,
    },
    /// A blob a document names is not in the archive.
    #[error("blob {blob} is missing (named by {entry})")]
    MissingBlob {
        /// The blob's path in the archive.
        blob: String,
        /// The document that names it.
        entry: String,
    },
    /// A blob's bytes do not hash to its digest.
    #[error("blob {blob} has digest {actual}, expected {expected}")]
    DigestMismatch {
        /// The blob's path in the archive.
        blob: String,
        /// The digest it was named by.
        expected: Digest,
        /// The digest of its bytes.
        actual: Digest,
    },
    /// A blob's length differs from its descriptor's size.
    #[error("blob {blob} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The blob's path in the archive.
        blob: String,
        /// The descriptor's size.
        expected: u64,
        /// The bytes read.
        actual: u64,
    },
    /// A layer's uncompressed stream does not hash to the DiffID its config names.
    #[error("layer {index} (blob {blob}) has diff id {actual}, the config says {expected}")]
    DiffIdMismatch {
        /// The layer's position in the manifest, from 0 at the base.
        index: usize,
        /// The layer blob's path in the archive.
        blob: String,
        /// The config's `rootfs.diff_ids` entry.
        expected: Digest,
        /// The digest of the uncompressed stream.
        actual: Digest,
    },
    /// A layer could not be decompressed (truncated or corrupt).
    #[error("layer blob {blob} could not be decompressed")]
    Decompression {
        /// The layer blob's path in the archive.
        blob: String,
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// A layer blob could not be read from the archive.
    #[error("failed to read layer blob {blob}")]
    BlobRead {
        /// The layer blob's path in the archive.
        blob: String,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// A layer grew past the configured uncompressed size limit.
    #[error("layer blob {blob} expands past the limit of {limit} bytes")]
    LayerTooLarge {
        /// The layer blob's path in the archive.
        blob: String,
        /// The limit, [`ImportLimits::max_layer_bytes`](crate::ImportLimits::max_layer_bytes).
        limit: u64,
    },
    /// A layer expanded more than the configured ratio (a decompression bomb).
    #[error("layer blob {blob} expands more than {limit} times")]
    CompressionRatio {
        /// The layer blob's path in the archive.
        blob: String,
        /// The limit, [`ImportLimits::max_ratio`](crate::ImportLimits::max_ratio).
        limit: u64,
    },
    /// A JSON document is larger than the store reads into memory.
    #[error("{entry} is larger than {limit} bytes")]
    DocumentTooLarge {
        /// The archive entry (or blob digest).
        entry: String,
        /// The limit, [`ImportLimits::max_document_bytes`](crate::ImportLimits::max_document_bytes).
        limit: u64,
    },
    /// A layer's media type is not a tar, gzip or zstd layer.
    #[error("layer blob {blob} has unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// The layer blob's digest.
        blob: String,
        /// Its media type.
        media_type: String,
    },
    /// An index or manifest list has no manifest for this host's platform.
    #[error("{entry} has no manifest for {platform}")]
    NoPlatform {
        /// The index.
        entry: String,
        /// The platform looked for (`linux/amd64`).
        platform: &'static str,
    },
    /// The string is not a valid image name.
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName {
        /// The rejected string.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// No image has that name.
    #[error("image {0} does not exist")]
    NotFound(String),
    /// The image cannot be removed: containers were created from it.
    #[error("image {image} is used by container(s) {}", containers.join(", "))]
    InUse {
        /// The image.
        image: String,
        /// The containers made from it.
        containers: Vec<String>,
    },
    /// The string is not a valid container name.
    #[error("invalid container name {name:?}: {reason}")]
    InvalidContainerName {
        /// The rejected string.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// No container has that name.
    #[error("container {0} does not exist")]
    ContainerNotFound(String),
    /// A container (or a layer outside the store) already has that name.
    #[error("container {0} already exists")]
    ContainerExists(String),
    /// An operation failed and undoing its partial effect failed too; both are kept.
    #[error("{error}; rolling back failed too")]
    RollbackFailed {
        /// The original failure.
        error: Box<ImageError>,
        /// The failure of the rollback.
        #[source]
        rollback: Box<ImageError>,
    },
}

impl ImageError {
    /// An [`ImageError::Io`] for `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
