//! Phase two of an apply: merge the staged tree into the layer.
//!
//! Only renames and metadata changes, so it rarely fails, and every step can be repeated:
//! deletions (whiteouts, opaque directories) move the layer's entries into `<staging>/trash`
//! and are marked done before any staged entry moves in (repeating them later would delete
//! what the archive added); then staged entries are renamed into place one by one, so an
//! entry already moved is simply absent from the staging tree when the merge is resumed.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps,
};
use rustix::io::Errno;

use super::manifest::Manifest;
use crate::tree::{self, fd_xattrs, is_private_xattr, open_dir};
use crate::{IoContext, Result};

/// Merges `<staging>/tree` into `target` as `manifest` says; safe to call again after a crash.
pub(crate) fn merge(staging: &Path, target: &Path, manifest: &Manifest) -> Result<()> {
    let mut m = Merger {
        target: open_dir(target)?,
        trash: open_dir(&staging.join("trash"))?,
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
    trash: OwnedFd,
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
        let slot = CString::new(self.trashed.to_string()).map_err(|_| Errno::INVAL)?;
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
        let Some(dir) = self.resolve(parent)? else {
            return Ok(());
        };
        let name = CString::new(base).map_err(|_| Errno::INVAL)?;
        self.trash(dir.as_fd(), &name)
    }

    fn clear_opaque(&mut self, path: &[u8]) -> rustix::io::Result<()> {
        let Some(dir) = self.resolve(path)? else {
            return Ok(());
        };
        for name in tree::list_dir(dir.as_fd())? {
            self.trash(dir.as_fd(), &name)?;
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
            let existing = match tree::open_dir_at(dst, name) {
                Ok(fd) => Some(fd),
                // A directory only implied by the archive goes through a symlink of the
                // layer, as tar and the container would see it (e.g. lib -> usr/lib).
                Err(Errno::LOOP) | Err(Errno::NOTDIR) if self.implicit.contains(rel) => {
                    self.resolve(rel)?
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
                rfs::renameat(src, name, dst, name)
            }
            Err(e) => Err(e),
        }
    }
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
