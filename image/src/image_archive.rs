//! The files of an image archive: a directory, or a tar read in place.
//!
//! A tar is indexed once (each regular file's data offset and length, found by seeking past
//! the data rather than reading it); a blob is then read by seeking to its offset. Nothing is
//! extracted to disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use crate::{ImageError, Result};

/// How many symlinks or hardlinks are followed in a row inside a tar before giving up.
const MAX_LINK_HOPS: usize = 8;

/// An image archive's files, by their path relative to the archive's root.
#[derive(Debug)]
pub(crate) enum ImageArchive {
    /// A directory.
    Dir {
        /// The directory, canonical.
        root: PathBuf,
    },
    /// A tar file.
    Tar {
        /// The tar file.
        path: PathBuf,
        /// Regular files (links resolved): normalized path to data offset and length.
        files: HashMap<String, TarSpan>,
    },
}

/// Where a file's bytes are in a tar.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TarSpan {
    offset: u64,
    len: u64,
}

/// An archive file being read, with its length.
pub(crate) struct ArchiveFile {
    /// The bytes, buffered, limited to the file's length.
    pub reader: io::Take<BufReader<File>>,
    /// The file's length.
    pub len: u64,
}

impl ImageArchive {
    /// Opens `path`, a directory or a tar file.
    pub fn open(path: &Path) -> Result<ImageArchive> {
        let meta = std::fs::metadata(path).map_err(|e| ImageError::io("stat", path, e))?;
        if meta.is_dir() {
            let root = path
                .canonicalize()
                .map_err(|e| ImageError::io("resolve", path, e))?;
            return Ok(ImageArchive::Dir { root });
        }
        let files = index_tar(path)?;
        Ok(ImageArchive::Tar {
            path: path.to_owned(),
            files,
        })
    }

    /// Whether the archive has the regular file `rel`.
    pub fn has(&self, rel: &str) -> bool {
        let Some(norm) = normalize(rel) else {
            return false;
        };
        match self {
            ImageArchive::Dir { root } => root.join(&norm).is_file(),
            ImageArchive::Tar { files, .. } => files.contains_key(&norm),
        }
    }

    /// Opens the file at `rel`, which `entry` names. A path that is absolute, has `..`, or
    /// (in a directory) resolves outside the archive is [`ImageError::UnsafePath`]; a missing
    /// file is [`ImageError::MissingBlob`].
    pub fn open_file(&self, rel: &str, entry: &str) -> Result<ArchiveFile> {
        let unsafe_path = || ImageError::UnsafePath {
            path: rel.to_owned(),
            entry: entry.to_owned(),
        };
        let missing = || ImageError::MissingBlob {
            blob: rel.to_owned(),
            entry: entry.to_owned(),
        };
        let norm = normalize(rel).ok_or_else(unsafe_path)?;
        match self {
            ImageArchive::Dir { root } => {
                let joined = root.join(&norm);
                let real = match joined.canonicalize() {
                    Ok(p) => p,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
                    Err(e) => return Err(ImageError::io("resolve", joined, e)),
                };
                if !real.starts_with(root) {
                    return Err(unsafe_path());
                }
                let file = File::open(&real).map_err(|e| ImageError::io("open", &real, e))?;
                let meta = file
                    .metadata()
                    .map_err(|e| ImageError::io("stat", &real, e))?;
                if !meta.is_file() {
                    return Err(missing());
                }
                let len = meta.len();
                Ok(ArchiveFile {
                    reader: BufReader::with_capacity(1 << 17, file).take(len),
                    len,
                })
            }
            ImageArchive::Tar { path, files } => {
                let span = files.get(&norm).copied().ok_or_else(missing)?;
                let mut file = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
                file.seek(SeekFrom::Start(span.offset))
                    .map_err(|e| ImageError::io("seek in", path, e))?;
                Ok(ArchiveFile {
                    reader: BufReader::with_capacity(1 << 17, file).take(span.len),
                    len: span.len,
                })
            }
        }
    }

    /// Reads the whole file at `rel` (a JSON document), refusing more than `limit` bytes.
    pub fn read_document(&self, rel: &str, entry: &str, limit: u64) -> Result<Vec<u8>> {
        let f = self.open_file(rel, entry)?;
        if f.len > limit {
            return Err(ImageError::DocumentTooLarge {
                entry: rel.to_owned(),
                limit,
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(f.len).unwrap_or(0));
        let mut r = f.reader;
        r.read_to_end(&mut buf)
            .map_err(|e| ImageError::io("read", self.display_path(rel), e))?;
        Ok(buf)
    }

    /// A path for messages: the file in the directory, or `tar:rel`.
    fn display_path(&self, rel: &str) -> PathBuf {
        match self {
            ImageArchive::Dir { root } => root.join(rel),
            ImageArchive::Tar { path, .. } => {
                let mut p = path.clone().into_os_string();
                p.push(":");
                p.push(rel);
                PathBuf::from(p)
            }
        }
    }
}

/// `rel` as a plain relative path (`./` and empty components dropped), or `None` when it is
/// absolute or has a `..` component.
pub(crate) fn normalize(rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

/// `target` of a symlink at `link`, resolved lexically inside the archive; `None` if it leaves.
fn resolve_symlink(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

enum Link {
    Sym(String),
    Hard(String),
}

fn index_tar(path: &Path) -> Result<HashMap<String, TarSpan>> {
    let file = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let bad = |e: io::Error| ImageError::io("read tar", path, e);
    let mut files = HashMap::new();
    let mut links: Vec<(String, Link)> = Vec::new();
    for entry in archive.entries_with_seek().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?;
        let Some(name) = name.to_str().and_then(normalize) else {
            // Unsafe or non-UTF-8 names are never looked up, so never indexed.
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_file() {
            let span = TarSpan {
                offset: entry.raw_file_position(),
                len: entry.size(),
            };
            files.insert(name, span);
        } else if kind.is_symlink() || kind.is_hard_link() {
            let Some(target) = entry.link_name().map_err(bad)? else {
                continue;
            };
            let Some(target) = target.to_str().map(str::to_owned) else {
                continue;
            };
            let link = if kind.is_symlink() {
                Link::Sym(target)
            } else {
                Link::Hard(target)
            };
            links.push((name, link));
        }
    }
    // Links point at files indexed above, or at other links; follow a few hops.
    let links: HashMap<String, Link> = links.into_iter().collect();
    for name in links.keys() {
        let mut cur = name.clone();
        for _ in 0..MAX_LINK_HOPS {
            let next = match links.get(&cur) {
                Some(Link::Sym(t)) => resolve_symlink(&cur, t),
                Some(Link::Hard(t)) => normalize(t),
                None => None,
            };
            let Some(next) = next else { break };
            if let Some(span) = files.get(&next).copied() {
                files.insert(name.clone(), span);
                break;
            }
            cur = next;
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_rejects_parent_and_absolute_paths() {
        assert_eq!(
            normalize("./blobs/sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(normalize("blobs/sha256/../../etc/passwd"), None);
        assert_eq!(normalize("/etc/passwd"), None);
        assert_eq!(normalize("."), None);
    }

    #[test]
    fn symlinks_resolve_inside_the_archive_only() {
        assert_eq!(
            resolve_symlink("a/layer.tar", "../b/layer.tar").as_deref(),
            Some("b/layer.tar")
        );
        assert_eq!(resolve_symlink("a/layer.tar", "../../x"), None);
        assert_eq!(resolve_symlink("a/layer.tar", "/etc/passwd"), None);
    }
}
