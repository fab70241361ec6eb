//! An image store above any [`GraphDriver`](graphdriver_api::GraphDriver).
//!
//! # The model
//!
//! An **image** is a manifest, a config and a stack of layer blobs. The store imports images
//! from an OCI image layout (a directory or a tar of one) or a `docker save` tar, choosing
//! `linux/amd64` from an index. Each layer is applied once, into the driver layer named by the
//! hex of its **ChainID** (the digest of the stack up to it), so images that share a base share
//! its layers.
//!
//! # Verification
//!
//! Every manifest and config is checked against its digest before any layer is created. Each
//! layer blob is decompressed (plain, gzip or zstd) as a stream straight into
//! [`GraphDriver::apply_diff`](graphdriver_api::GraphDriver::apply_diff), hashed twice on the
//! way: its compressed bytes against the blob digest, its uncompressed bytes against the
//! config's DiffID. Limits ([`ImportLimits`]) stop decompression bombs. Any failure removes
//! the layers the import created and records no image.
//!
//! # Records and crashes
//!
//! Records live in one redb database: images by name, and *pending* layers (being created, or
//! being removed). A layer is pending before the driver creates it and stops being pending in
//! the transaction that records its image; a removal marks the layers it will remove pending
//! in the transaction that deletes the image. [`ImageStore::open`] removes pending layers that
//! no image names. Reference counts are counted from the image records, never stored.
//!
//! # Containers
//!
//! A **container** is a named writable layer on an image's top layer; its driver layer's id is
//! its name, so `graphctl mount NAME` mounts it. Its record keeps the image's layers, so they
//! stay while it does (an image with containers cannot be removed; one replaced by a
//! re-import of its name leaves its layers to its containers). A container is recorded in
//! state *creating* before its layer is made and *removing* before its layer is removed;
//! [`ImageStore::open`] finishes both. [`ImageStore::container_size`] gives its own size and
//! its virtual size as `docker ps -s` does, and [`ImageStore::commit_container`] makes an
//! image of it: its image's layers plus one layer applied from its diff.
//!
//! # Saving
//!
//! [`ImageStore::save`] writes an image as an OCI image layout tar: its layers are the
//! driver's diffs, compressed with fixed settings, so the same layers give the same bytes.
//! When a driver's diff is not the imported tar byte for byte, the saved config's DiffIDs (and
//! so its digest) are the new ones.

/// `Display` (padded), `Debug` (quoted), `TryFrom<String>` (through its `validate`) and
/// `From<$t> for String` for a string newtype `$t(String)`.
macro_rules! validated_string_impls {
    ($t:ident) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(&self.0)
            }
        }

        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl TryFrom<String> for $t {
            type Error = &'static str;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::validate(&s)?;
                Ok($t(s))
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
    };
}

mod chain_id;
mod container_record;
mod containers;
mod digest;
mod error;
#[cfg(feature = "fuzz")]
pub mod fuzz;
mod image_archive;
mod image_name;
mod image_record;
mod image_store;
mod import_limits;
mod import_plan;
mod layer_stream;
mod layout_tar;
mod manifest;
mod record_db;

pub use chain_id::{chain_ids, layer_id};
pub use container_record::{ContainerRecord, ContainerSize, ContainerState};
pub use containers::ContainerRemoval;
pub use digest::Digest;
pub use error::{ImageError, Result};
pub use image_name::{ImageName, MAX_IMAGE_NAME_LEN};
pub use image_record::{ImageRecord, LayerRecord};
pub use image_store::{ImageStore, ImportEvent, ImportReport, RemoveReport, DB_FILE};
pub use import_limits::ImportLimits;
pub use layer_stream::Compression;
pub use layout_tar::{layer_media_type, SaveReport};
pub use manifest::REF_NAME;
