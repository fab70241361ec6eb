//! What the store records about an image and its layers.

use std::time::SystemTime;

use graphdriver_api::LayerId;
use serde::{Deserialize, Serialize};

use crate::chain_id::layer_id;
use crate::{Digest, ImageName, Result};

/// An imported image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Its name (a reference, a tag, or its digest when it has no name).
    pub name: ImageName,
    /// The manifest's digest (`None` for `docker save` archives, which have no manifest blob).
    pub manifest: Option<Digest>,
    /// The config's digest (the image id docker shows).
    pub config: Digest,
    /// The config's `created`, as written there (RFC 3339).
    pub created: Option<String>,
    /// When it was imported.
    pub imported: SystemTime,
    /// Its layers, base first.
    pub layers: Vec<LayerRecord>,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The ChainID: the stack up to and including this layer; the driver layer is its hex.
    pub chain_id: Digest,
    /// The DiffID: the digest of the uncompressed layer tar.
    pub diff_id: Digest,
    /// The digest of the blob as stored in the archive (compressed).
    pub blob: Digest,
    /// The blob's media type, when the archive gave one.
    pub media_type: Option<String>,
    /// The blob's length.
    pub compressed_size: u64,
    /// The layer's size: regular-file bytes, as `apply_diff` and `diff_size` count them.
    pub size: u64,
}

impl LayerRecord {
    /// The driver layer holding this layer's stack.
    pub fn layer_id(&self) -> Result<LayerId> {
        layer_id(&self.chain_id)
    }
}

impl ImageRecord {
    /// The driver layer holding the whole image (its top layer), or `None` for an image
    /// without layers.
    pub fn top_layer(&self) -> Result<Option<LayerId>> {
        self.layers.last().map(LayerRecord::layer_id).transpose()
    }

    /// The sum of the layers' sizes.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}
