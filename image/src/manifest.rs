//! The JSON documents of an image archive, as far as the store reads them.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `org.opencontainers.image.ref.name`: an image's name in an OCI layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The index annotation containerd writes with an image's full name.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A content descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: Option<String>,
    pub digest: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// A descriptor's platform.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    pub architecture: String,
    pub os: String,
}

/// An OCI index or docker manifest list.
#[derive(Debug, Deserialize)]
pub(crate) struct Index {
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Deserialize)]
pub(crate) struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An image config, the parts the store reads.
#[derive(Debug, Deserialize)]
pub(crate) struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    pub rootfs: RootFs,
}

/// The config's `rootfs`.
#[derive(Debug, Deserialize)]
pub(crate) struct RootFs {
    pub diff_ids: Vec<String>,
}

/// One entry of a `docker save` archive's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DockerEntry {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    pub layers: Vec<String>,
}

/// What a blob that may be an index or a manifest turned out to be.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum IndexOrManifest {
    /// It has `manifests`.
    Index(Index),
    /// It has `config` and `layers`.
    Manifest(Manifest),
}
