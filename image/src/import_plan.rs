//! What an archive holds, read and verified before any layer is applied: every document's
//! digest, every layer blob's presence, the DiffIDs and ChainIDs.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::chain_id::chain_ids;
use crate::image_archive::{normalize, ImageArchive};
use crate::layer_stream::Compression;
use crate::manifest::{
    Descriptor, DockerEntry, ImageConfig, IndexOrManifest, CONTAINERD_NAME, REF_NAME,
};
use crate::{Digest, ImageError, ImageName, ImportLimits, Result};

/// The platform an index is resolved to.
pub(crate) const HOST_OS: &str = "linux";
/// See [`HOST_OS`].
pub(crate) const HOST_ARCH: &str = "amd64";
const HOST_PLATFORM: &str = "linux/amd64";
/// How deep indexes may nest.
const MAX_INDEX_DEPTH: usize = 4;

/// One image to import.
#[derive(Debug)]
pub(crate) struct ImagePlan {
    pub names: Vec<ImageName>,
    pub manifest: Option<Digest>,
    pub config: Digest,
    /// The config document, kept so the image can be saved again.
    pub config_bytes: Vec<u8>,
    pub created: Option<String>,
    pub layers: Vec<LayerPlan>,
}

/// One layer of an image to import.
#[derive(Debug, Clone)]
pub(crate) struct LayerPlan {
    /// The blob's path in the archive.
    pub path: String,
    /// The document that names the blob.
    pub entry: String,
    /// The digest it must have, when the archive names one.
    pub blob: Option<Digest>,
    /// The size it must have, when a descriptor gives one.
    pub size: Option<u64>,
    /// The compression, when the media type says (otherwise sniffed).
    pub compression: Option<Compression>,
    pub media_type: Option<String>,
    pub diff_id: Digest,
    pub chain_id: Digest,
}

/// Reads the archive's images.
pub(crate) fn plan(
    archive: &ImageArchive,
    path: &Path,
    limits: &ImportLimits,
) -> Result<Vec<ImagePlan>> {
    if archive.has("manifest.json") {
        docker_plans(archive, limits)
    } else if archive.has("index.json") {
        oci_plans(archive, limits)
    } else {
        Err(ImageError::NotAnImage {
            path: path.to_owned(),
            reason: "it has neither index.json nor manifest.json".to_owned(),
        })
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8], entry: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Malformed {
        entry: entry.to_owned(),
        source,
    })
}

/// Reads the blob a descriptor names and checks its digest and size.
fn read_blob(
    archive: &ImageArchive,
    desc: &Descriptor,
    entry: &str,
    limits: &ImportLimits,
) -> Result<(Digest, Vec<u8>)> {
    let digest = Digest::parse(&desc.digest, entry)?;
    let bytes = read_verified(archive, &digest.blob_path(), Some(&digest), entry, limits)?;
    if let Some(size) = desc.size {
        let actual = bytes.len() as u64;
        if actual != size {
            return Err(ImageError::SizeMismatch {
                blob: digest.blob_path(),
                expected: size,
                actual,
            });
        }
    }
    Ok((digest, bytes))
}

fn read_verified(
    archive: &ImageArchive,
    rel: &str,
    expected: Option<&Digest>,
    entry: &str,
    limits: &ImportLimits,
) -> Result<Vec<u8>> {
    let bytes = archive.read_document(rel, entry, limits.max_document_bytes)?;
    if let Some(expected) = expected {
        let actual = Digest::of(&bytes);
        if &actual != expected {
            return Err(ImageError::DigestMismatch {
                blob: rel.to_owned(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(bytes)
}

fn oci_plans(archive: &ImageArchive, limits: &ImportLimits) -> Result<Vec<ImagePlan>> {
    let bytes = archive.read_document("index.json", "index.json", limits.max_document_bytes)?;
    let index: crate::manifest::Index = parse(&bytes, "index.json")?;
    let mut plans: Vec<ImagePlan> = Vec::new();
    for desc in &index.manifests {
        if !platform_fits(desc) {
            continue;
        }
        // containerd's full name when it wrote one (its ref.name is then only the tag, as
        // `ctr images export` and many tools write it), else the OCI ref.name.
        let name = desc
            .annotations
            .as_ref()
            .and_then(|a| a.get(CONTAINERD_NAME).or_else(|| a.get(REF_NAME)))
            .map(|n| ImageName::new(n.clone()))
            .transpose()?;
        let plan = resolve(archive, desc, "index.json", limits, 0)?;
        match plans.iter_mut().find(|p| p.manifest == plan.manifest) {
            Some(p) => p.names.extend(name),
            None => {
                let mut plan = plan;
                plan.names.extend(name);
                plans.push(plan);
            }
        }
    }
    if index.manifests.is_empty() {
        return Err(ImageError::Invalid {
            entry: "index.json".to_owned(),
            reason: "it lists no manifests".to_owned(),
        });
    }
    if plans.is_empty() {
        return Err(ImageError::NoPlatform {
            entry: "index.json".to_owned(),
            platform: HOST_PLATFORM,
        });
    }
    Ok(plans)
}

fn platform_fits(desc: &Descriptor) -> bool {
    desc.platform
        .as_ref()
        .is_none_or(|p| p.os == HOST_OS && p.architecture == HOST_ARCH)
}

/// Follows a descriptor through nested indexes to an image manifest for this platform.
fn resolve(
    archive: &ImageArchive,
    desc: &Descriptor,
    entry: &str,
    limits: &ImportLimits,
    depth: usize,
) -> Result<ImagePlan> {
    let (digest, bytes) = read_blob(archive, desc, entry, limits)?;
    let blob = digest.blob_path();
    match parse::<IndexOrManifest>(&bytes, &blob)? {
        IndexOrManifest::Index(index) => {
            if depth >= MAX_INDEX_DEPTH {
                return Err(ImageError::Invalid {
                    entry: blob,
                    reason: format!("indexes nest more than {MAX_INDEX_DEPTH} deep"),
                });
            }
            let chosen = index
                .manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|_| platform_fits(d)))
                .or_else(|| match index.manifests.as_slice() {
                    [only] if only.platform.is_none() => Some(only),
                    _ => None,
                })
                .ok_or(ImageError::NoPlatform {
                    entry: blob.clone(),
                    platform: HOST_PLATFORM,
                })?;
            resolve(archive, chosen, &blob, limits, depth + 1)
        }
        IndexOrManifest::Manifest(manifest) => {
            let (config_digest, config_bytes) =
                read_blob(archive, &manifest.config, &blob, limits)?;
            let config_entry = config_digest.blob_path();
            let config: ImageConfig = parse(&config_bytes, &config_entry)?;
            let diff_ids = diff_ids(&config, &config_entry, manifest.layers.len())?;
            let chains = chain_ids(&diff_ids);
            let mut layers = Vec::with_capacity(manifest.layers.len());
            for ((l, diff_id), chain_id) in manifest.layers.iter().zip(diff_ids).zip(chains) {
                let digest = Digest::parse(&l.digest, &blob)?;
                let path = digest.blob_path();
                if !archive.has(&path) {
                    return Err(ImageError::MissingBlob {
                        blob: path,
                        entry: blob,
                    });
                }
                let compression = match &l.media_type {
                    Some(mt) => Compression::for_media_type(mt).ok_or_else(|| {
                        ImageError::UnsupportedMediaType {
                            blob: path.clone(),
                            media_type: mt.clone(),
                        }
                    })?,
                    None => None,
                };
                layers.push(LayerPlan {
                    path,
                    entry: blob.clone(),
                    blob: Some(digest),
                    size: l.size,
                    compression,
                    media_type: l.media_type.clone(),
                    diff_id,
                    chain_id,
                });
            }
            Ok(ImagePlan {
                names: Vec::new(),
                manifest: Some(digest),
                config: config_digest,
                created: config.created,
                config_bytes,
                layers,
            })
        }
    }
}

fn diff_ids(config: &ImageConfig, entry: &str, layers: usize) -> Result<Vec<Digest>> {
    if config.rootfs.diff_ids.len() != layers {
        return Err(ImageError::Invalid {
            entry: entry.to_owned(),
            reason: format!(
                "it has {} diff ids for {layers} layers",
                config.rootfs.diff_ids.len()
            ),
        });
    }
    config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d, entry))
        .collect()
}

/// The digest a `docker save` path implies: `blobs/sha256/<hex>` (docker 25 and later) names
/// its content; `<id>/layer.tar` names a legacy layer id, not a digest.
fn implied_digest(path: &str) -> Option<Digest> {
    let hex = path.strip_prefix("blobs/sha256/")?;
    Digest::parse(&format!("sha256:{hex}"), path).ok()
}

/// The digest a `docker save` config path implies: `blobs/sha256/<hex>`, or the legacy
/// `<hex>.json`, whose name is the config's digest (the image id).
fn implied_config_digest(path: &str) -> Option<Digest> {
    implied_digest(path).or_else(|| {
        let hex = path.strip_suffix(".json")?;
        Digest::parse(&format!("sha256:{hex}"), path).ok()
    })
}

/// A `docker save` path, checked: relative, no `..`.
fn docker_path(p: &str) -> Result<String> {
    normalize(p).ok_or_else(|| ImageError::UnsafePath {
        path: p.to_owned(),
        entry: "manifest.json".to_owned(),
    })
}

fn docker_plans(archive: &ImageArchive, limits: &ImportLimits) -> Result<Vec<ImagePlan>> {
    let bytes =
        archive.read_document("manifest.json", "manifest.json", limits.max_document_bytes)?;
    let entries: Vec<DockerEntry> = parse(&bytes, "manifest.json")?;
    let mut plans = Vec::with_capacity(entries.len());
    for e in entries {
        let config_path = docker_path(&e.config)?;
        let layer_paths = e
            .layers
            .iter()
            .map(|l| docker_path(l))
            .collect::<Result<Vec<_>>>()?;
        let implied = implied_config_digest(&config_path);
        let config_bytes = read_verified(
            archive,
            &config_path,
            implied.as_ref(),
            "manifest.json",
            limits,
        )?;
        let config_digest = Digest::of(&config_bytes);
        let config: ImageConfig = parse(&config_bytes, &config_path)?;
        let diff_ids = diff_ids(&config, &config_path, layer_paths.len())?;
        let chains = chain_ids(&diff_ids);
        let mut layers = Vec::with_capacity(layer_paths.len());
        for ((path, diff_id), chain_id) in layer_paths.into_iter().zip(diff_ids).zip(chains) {
            if !archive.has(&path) {
                return Err(ImageError::MissingBlob {
                    blob: path,
                    entry: "manifest.json".to_owned(),
                });
            }
            layers.push(LayerPlan {
                entry: "manifest.json".to_owned(),
                blob: implied_digest(&path),
                path,
                size: None,
                compression: None,
                media_type: None,
                diff_id,
                chain_id,
            });
        }
        let names = e
            .repo_tags
            .unwrap_or_default()
            .into_iter()
            .map(ImageName::new)
            .collect::<Result<Vec<_>>>()?;
        plans.push(ImagePlan {
            names,
            manifest: None,
            config: config_digest,
            created: config.created,
            config_bytes,
            layers,
        });
    }
    Ok(plans)
}
