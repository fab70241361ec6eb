//! What the store records about a container: a named writable layer on an image.

use std::time::SystemTime;

use graphdriver_api::LayerId;
use serde::{Deserialize, Serialize};

use crate::{Digest, ImageError, ImageName, LayerRecord, Result};

/// A container: the writable driver layer whose id is its name, on top of an image's layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Its name, which is also the id of its driver layer (`graphctl mount NAME` mounts it).
    pub name: LayerId,
    /// The image it was created from, by name.
    pub image: ImageName,
    /// That image's config digest (its image id) when the container was created.
    pub image_id: Digest,
    /// The image's layers, base first. They stay while the container does, even if the image
    /// is replaced by another of the same name.
    pub layers: Vec<LayerRecord>,
    /// When it was created.
    pub created: SystemTime,
    /// Whether it is complete, or being created or removed.
    pub state: ContainerState,
}

/// Where a container is in its life. Only [`Created`](ContainerState::Created) containers are
/// whole; the others are what an interrupted create or remove left, and
/// [`ImageStore::open`](crate::ImageStore::open) removes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Recorded, its layer perhaps not made yet.
    Creating,
    /// Its layer exists and it can be used.
    Created,
    /// Being removed; its layer may be gone already.
    Removing,
}

/// A container's sizes, as `docker ps -s` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerSize {
    /// The bytes of regular files the container itself holds (its writable layer's diff).
    pub size: u64,
    /// Its image's size plus [`size`](Self::size).
    pub virtual_size: u64,
}

impl ContainerRecord {
    /// The sum of the image layers' sizes.
    pub fn image_size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// The top layer of its image (the parent of its writable layer), if the image has layers.
    pub fn parent_layer(&self) -> Result<Option<LayerId>> {
        self.layers.last().map(LayerRecord::layer_id).transpose()
    }
}

/// Checks a container name: a valid layer id that cannot be taken for an image layer (those
/// are 64 lowercase hex digits, a ChainID's).
pub(crate) fn container_id(name: &str) -> Result<LayerId> {
    let invalid = |reason: String| ImageError::InvalidContainerName {
        name: name.to_owned(),
        reason,
    };
    let id = LayerId::new(name).map_err(|e| invalid(e.to_string()))?;
    if name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(invalid(
            "64 hex digits name the store's image layers (by ChainID)".to_owned(),
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_layer_ids_and_not_chain_id_hex() {
        assert!(container_id("web-1").is_ok());
        assert!(container_id("a/b").is_err());
        assert!(container_id("").is_err());
        assert!(matches!(
            container_id(&"ab".repeat(32)),
            Err(ImageError::InvalidContainerName { .. })
        ));
        // Uppercase hex is not a ChainID's form, so it is a fine name.
        assert!(container_id(&"AB".repeat(32)).is_ok());
    }
}
