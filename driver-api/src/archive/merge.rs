//! Phase two of an apply: merge the staged tree into the layer.
//!
//! Only renames and metadata changes, so it rarely fails, and every step can be repeated:
//! deletions (whiteouts, opaque directories) move the layer's entries into `<staging>/trash`
//! and are marked done before any staged entry moves in (repeating them later would delete
//! what the archive added); then staged entries are renamed into place one by one, so an
//! entry already moved is simply absent from the staging tree when the merge is resumed.

use std::collections::{HashSet, VecDeque};
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps,
};
use rustix::io::Errno;

use super::manifest::Manifest;
use crate::tree::{self, fd_xattrs, is_private_xattr, open_dir};
use crate::{IoContext, Result};

/// Merges `<staging>/tree` into `target` as `manifest` says; safe to call again after a crash.
pub(crate) fn merge(
    staging: &Path,
    target: &Path,
    lowers: &[PathBuf],
    manifest: &Manifest,
) -> Result<()> {
    let mut m = Merger {
        target: open_dir(target)?,
        lowers: lowers.iter().map(|l| open_dir(l)).collect::<Result<_>>()?,
        trash: open_dir(&staging.join("trash"))?,
        attempt: format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ),
        trashed: 0,
        implicit: manifest.implicit.iter().cloned().collect(),
    };
    let done = staging.join("deletions-done");
    if !done.exists() {
        for p in &manifest.whiteouts {
            m.delete(p)
                .ctx("apply whiteout in", target.join(OsStr::from_bytes(p)))?;
        }
        for p in &manifest.opaque {
            m.clear_opaque(p)
                .ctx("make opaque", target.join(OsStr::from_bytes(p)))?;
        }
        std::fs::write(&done, b"").ctx("create", &done)?;
    }
    let tree = open_dir(&staging.join("tree"))?;
    let tfd = m.target.try_clone().ctx("duplicate fd", target)?;
    let root_meta = rfs::fstat(&tree).ctx("stat", staging)?;
    m.merge_dir(tree.as_fd(), tfd.as_fd(), &mut Vec::new())
        .ctx("merge into", target)?;
    if manifest.root_explicit {
        copy_dir_meta(tree.as_fd(), &root_meta, tfd.as_fd()).ctx("set metadata of", target)?;
    }
    Ok(())
}

struct Merger {
    target: OwnedFd,
    /// Layers below the target, closest first (overlay upper directories only).
    lowers: Vec<OwnedFd>,
    trash: OwnedFd,
    /// Names this attempt's trash slots apart from an interrupted attempt's.
    attempt: String,
    trashed: u64,
    implicit: HashSet<Vec<u8>>,
}

impl Merger {
    /// Opens a directory of the layer, following symlinks inside the layer root as the
    /// container would see them; `None` when it does not exist.
    fn resolve(&self, rel: &[u8]) -> rustix::io::Result<Option<OwnedFd>> {
        let rel = if rel.is_empty() { &b"."[..] } else { rel };
        match rfs::openat2(
            &self.target,
            OsStr::from_bytes(rel),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Moves `dir/name` into the trash; nothing if it does not exist.
    fn trash(&mut self, dir: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<()> {
        self.trashed += 1;
        // unique across attempts too: a resumed merge must not rename onto an earlier slot
        let slot =
            CString::new(format!("{}.{}", self.attempt, self.trashed)).map_err(|_| Errno::INVAL)?;
        match rfs::renameat(dir, name, &self.trash, &slot) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::XDEV) => tree::remove_entry_at(dir, name),
            Err(e) => Err(e),
        }
    }

    fn delete(&mut self, path: &[u8]) -> rustix::io::Result<()> {
        let (parent, base) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        let name = CString::new(base).map_err(|_| Errno::INVAL)?;
        if self.lowers.is_empty() {
            let Some(dir) = self.resolve(parent)? else {
                return Ok(());
            };
            return self.trash(dir.as_fd(), &name);
        }
        // Over lower layers, a deletion is an overlay whiteout in the upper directory.
        let Some(dir) = self.upper_dir(parent)? else {
            return Ok(());
        };
        self.trash(dir.as_fd(), &name)?;
        match rfs::mknodat(
            &dir,
            &name,
            FileType::CharacterDevice,
            Mode::empty(),
            rfs::makedev(0, 0),
        ) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn clear_opaque(&mut self, path: &[u8]) -> rustix::io::Result<()> {
        let dir = if self.lowers.is_empty() {
            self.resolve(path)?
        } else {
            self.upper_dir(path)?
        };
        let Some(dir) = dir else {
            return Ok(());
        };
        // Reached through a symlink to the layer root: an opaque root hides nothing (overlayfs
        // ignores it), and the root may hold the staging directory itself.
        if same_inode(dir.as_fd(), self.target.as_fd())? {
            return Ok(());
        }
        for name in tree::list_dir(dir.as_fd())? {
            self.trash(dir.as_fd(), &name)?;
        }
        if !self.lowers.is_empty() {
            rfs::fsetxattr(&dir, OPAQUE_XATTR, b"y", rfs::XattrFlags::empty())?;
        }
        Ok(())
    }

    /// What the merged view (upper, then lowers) has at `rel`, which names no symlinks.
    fn merged_kind(&self, rel: &[u8]) -> rustix::io::Result<Merged> {
        let (parent, base) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        let name = CString::new(base).map_err(|_| Errno::INVAL)?;
        for layer in std::iter::once(&self.target).chain(self.lowers.iter()) {
            let dir = match open_beneath(layer.as_fd(), parent) {
                Ok(d) => d,
                Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                Err(e) => return Err(e),
            };
            match rfs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    return Ok(match FileType::from_raw_mode(st.st_mode) {
                        FileType::Directory => Merged::Dir,
                        FileType::Symlink => {
                            Merged::Symlink(rfs::readlinkat(&dir, &name, Vec::new())?.into_bytes())
                        }
                        FileType::CharacterDevice if st.st_rdev == 0 => Merged::Missing,
                        _ => Merged::Other,
                    })
                }
                Err(Errno::NOENT) => {
                    let mut v = [0u8; 1];
                    if matches!(rfs::fgetxattr(&dir, OPAQUE_XATTR, &mut v), Ok(1) if v[0] == b'y') {
                        return Ok(Merged::Missing);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Merged::Missing)
    }

    /// The directory the merged view has at `rel`, following symlinks as the container would
    /// (inside the layer root), made to exist in the upper directory: missing directories
    /// are created there with the metadata of the lower directory they shadow. `None` when
    /// the merged view has a non-directory on the way.
    fn upper_dir(&mut self, rel: &[u8]) -> rustix::io::Result<Option<OwnedFd>> {
        let mut todo: VecDeque<Vec<u8>> = split(rel).collect();
        let mut path: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            if c == b".." {
                path.pop();
                continue;
            }
            path.push(c);
            match self.merged_kind(&path.join(&b'/'))? {
                Merged::Dir | Merged::Missing => {}
                Merged::Other => return Ok(None),
                Merged::Symlink(target) => {
                    hops += 1;
                    if hops > 40 {
                        return Err(Errno::LOOP);
                    }
                    path.pop();
                    if target.first() == Some(&b'/') {
                        path.clear();
                    }
                    for (i, t) in split(&target).enumerate() {
                        todo.insert(i, t);
                    }
                }
            }
        }
        let mut cur = self.target.try_clone().map_err(|_| Errno::BADF)?;
        let mut sofar: Vec<u8> = Vec::new();
        for c in &path {
            if !sofar.is_empty() {
                sofar.push(b'/');
            }
            sofar.extend_from_slice(c);
            let name = CString::new(c.clone()).map_err(|_| Errno::INVAL)?;
            cur = match tree::open_dir_at(cur.as_fd(), &name) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    rfs::mkdirat(&cur, &name, Mode::from_raw_mode(0o755))?;
                    let fd = tree::open_dir_at(cur.as_fd(), &name)?;
                    self.copy_up_meta(&sofar, fd.as_fd())?;
                    fd
                }
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => return Ok(None),
                Err(e) => return Err(e),
            };
        }
        Ok(Some(cur))
    }

    /// Gives a directory just made in the upper layer the metadata of the first lower
    /// directory at `rel` (a copy-up), or leaves it `0755 root:root` when there is none.
    fn copy_up_meta(&self, rel: &[u8], dst: BorrowedFd<'_>) -> rustix::io::Result<()> {
        for layer in &self.lowers {
            match open_beneath(layer.as_fd(), rel) {
                Ok(src) => {
                    let st = rfs::fstat(&src)?;
                    return copy_dir_meta(src.as_fd(), &st, dst);
                }
                Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn merge_dir(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        rel: &mut Vec<u8>,
    ) -> rustix::io::Result<()> {
        for name in tree::list_dir(src)? {
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.to_bytes());
            self.merge_entry(src, dst, &name, rel)?;
            rel.truncate(len);
        }
        Ok(())
    }

    fn merge_entry(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &CStr,
        rel: &[u8],
    ) -> rustix::io::Result<()> {
        let st = rfs::statat(src, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let implicit = self.implicit.contains(rel);
            let existing = match tree::open_dir_at(dst, name) {
                Ok(fd) => Some(fd),
                // A directory only implied by the archive goes through a symlink of the
                // layer, as tar and the container would see it (e.g. lib -> usr/lib).
                Err(Errno::LOOP) | Err(Errno::NOTDIR) if implicit && self.lowers.is_empty() => {
                    self.resolve(rel)?
                }
                // Over lower layers, it is the directory of the merged view, copied up.
                Err(Errno::NOENT) | Err(Errno::LOOP) | Err(Errno::NOTDIR)
                    if implicit && !self.lowers.is_empty() =>
                {
                    self.upper_dir(rel)?
                }
                Err(Errno::NOENT) | Err(Errno::LOOP) | Err(Errno::NOTDIR) => None,
                Err(e) => return Err(e),
            };
            if let Some(target) = existing {
                let sub = tree::open_dir_at(src, name)?;
                self.merge_dir(sub.as_fd(), target.as_fd(), &mut rel.to_vec())?;
                if !self.implicit.contains(rel) {
                    copy_dir_meta(sub.as_fd(), &st, target.as_fd())?;
                }
                return match rfs::unlinkat(src, name, AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => Ok(()),
                    Err(e) => Err(e),
                };
            }
        }
        match rfs::renameat(src, name, dst, name) {
            Ok(()) => Ok(()),
            Err(Errno::ISDIR) | Err(Errno::NOTDIR) | Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => {
                self.trash(dst, name)?;
                rfs::renameat(src, name, dst, name)?;
                // Over lower layers, a directory that replaces something else (a whiteout, a
                // file) must hide what the lower layers have at that path, as the kernel's
                // own replacement would.
                if !self.lowers.is_empty()
                    && FileType::from_raw_mode(st.st_mode) == FileType::Directory
                {
                    let d = tree::open_dir_at(dst, name)?;
                    rfs::fsetxattr(&d, OPAQUE_XATTR, b"y", rfs::XattrFlags::empty())?;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// What the merged view has at a path.
enum Merged {
    Dir,
    Symlink(Vec<u8>),
    Other,
    Missing,
}

/// The xattr that makes an overlay upper directory opaque.
const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

fn split(p: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    p.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

/// Whether two open files are one inode.
fn same_inode(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> rustix::io::Result<bool> {
    let (x, y) = (rfs::fstat(a)?, rfs::fstat(b)?);
    Ok(x.st_dev == y.st_dev && x.st_ino == y.st_ino)
}

/// Opens directory `rel` of one layer without following symlinks.
fn open_beneath(layer: BorrowedFd<'_>, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
    let rel = if rel.is_empty() { &b"."[..] } else { rel };
    rfs::openat2(
        layer,
        OsStr::from_bytes(rel),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Gives `dst` the owner, mode, xattrs and mtime that `src` had (`st`, taken before the merge
/// changed `src`'s mtime).
fn copy_dir_meta(
    src: BorrowedFd<'_>,
    st: &rfs::Stat,
    dst: BorrowedFd<'_>,
) -> rustix::io::Result<()> {
    rfs::fchown(
        dst,
        Some(rfs::Uid::from_raw(st.st_uid)),
        Some(rfs::Gid::from_raw(st.st_gid)),
    )?;
    rfs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    let wanted = fd_xattrs(src)?;
    // The archive's entry describes all of the directory's xattrs: drop those it lacks.
    for (k, _) in fd_xattrs(dst)? {
        if !is_private_xattr(&k) && !wanted.iter().any(|(w, _)| *w == k) {
            let k = CString::new(k).map_err(|_| Errno::INVAL)?;
            match rfs::fremovexattr(dst, &k) {
                Ok(()) | Err(Errno::NODATA) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for (k, v) in wanted {
        if !is_private_xattr(&k) {
            let k = CString::new(k).map_err(|_| Errno::INVAL)?;
            rfs::fsetxattr(dst, &k, &v, rfs::XattrFlags::empty())?;
        }
    }
    rfs::futimens(
        dst,
        &Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: rfs::UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec as _,
            },
        },
    )
}
