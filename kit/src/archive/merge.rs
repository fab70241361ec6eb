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
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, Timespec, Timestamps};
use rustix::io::Errno;

use super::manifest::Manifest;
use super::merged_view::{self, Found, Level, Position, Reach};
use crate::tree::{self, fd_xattrs, is_private_xattr, open_dir};
use crate::{IoContext, Result};

/// Merges `<staging>/tree` into `target` as `manifest` says; safe to call again after a crash.
pub(crate) fn merge(
    staging: &Path,
    target: &Path,
    lowers: &[PathBuf],
    opaque: &'static CStr,
    manifest: &Manifest,
) -> Result<()> {
    let mut m = Merger {
        opaque,
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
        merged_one: false,
        implicit: manifest.implicit.iter().cloned().collect(),
        view: None,
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
        crate::failpoint::hit("apply.merge.after-deletions");
    }
    let tree = open_dir(&staging.join("tree"))?;
    let tfd = m.target.try_clone().ctx("duplicate fd", target)?;
    let tfd2 = m.target.try_clone().ctx("duplicate fd", target)?;
    let root_meta = rfs::fstat(&tree).ctx("stat", staging)?;
    let below = m.overlay().is_some();
    let tree_dup = tree.try_clone().ctx("duplicate fd", staging)?;
    m.merge_tree(tree_dup, tfd, below)
        .ctx("merge into", target)?;
    if manifest.root_explicit {
        copy_dir_meta(tree.as_fd(), &root_meta, tfd2.as_fd()).ctx("set metadata of", target)?;
    }
    Ok(())
}

struct Merger {
    /// The xattr that marks an opaque directory over `lowers`.
    opaque: &'static CStr,
    target: OwnedFd,
    /// Layers below the target, closest first (overlay upper directories only).
    lowers: Vec<OwnedFd>,
    trash: OwnedFd,
    /// Names this attempt's trash slots apart from an interrupted attempt's.
    attempt: String,
    trashed: u64,
    /// Whether an entry of the tree has been merged (the crash point `apply.merge.mid-tree`
    /// comes after the first).
    merged_one: bool,
    implicit: HashSet<Vec<u8>>,
    /// The last directory the merge reached through the view, and where: the next one is
    /// usually a child of it, one step away instead of a walk from the root.
    view: Option<(Vec<u8>, Position)>,
}

/// How many directories of a merge keep their two descriptors open; those further up are
/// closed on the way down and opened again through `..` on the way back, so a merge needs a
/// bounded number of open files whatever the depth of the tree.
const OPEN_FRAMES: usize = 32;

/// A staged directory being merged into a directory of the layer.
struct Frame {
    src: Option<OwnedFd>,
    dst: Option<OwnedFd>,
    src_id: (u64, u64),
    dst_id: (u64, u64),
    /// The staged entries, read up front (merging renames them away).
    names: Vec<CString>,
    next: usize,
    /// Length of the merge's relative path before this directory's name was added.
    rel_len: usize,
    /// Layers below may have a directory here.
    below: bool,
    /// For a subdirectory: its name in the staged parent, its staged metadata (taken before
    /// the merge changed its mtime), and whether the archive only implied it.
    sub: Option<(CString, rfs::Stat, bool)>,
    /// For an implied directory the layer already had: its mtime before the merge.
    kept_mtime: Option<(i64, i64)>,
}

impl Frame {
    fn new(
        src: OwnedFd,
        dst: OwnedFd,
        rel_len: usize,
        below: bool,
        sub: Option<(CString, rfs::Stat, bool)>,
    ) -> rustix::io::Result<Frame> {
        Ok(Frame {
            names: tree::list_dir(src.as_fd())?,
            src_id: id_of(src.as_fd())?,
            dst_id: id_of(dst.as_fd())?,
            src: Some(src),
            dst: Some(dst),
            next: 0,
            rel_len,
            below,
            sub,
            kept_mtime: None,
        })
    }

    fn fds(&self) -> rustix::io::Result<(BorrowedFd<'_>, BorrowedFd<'_>)> {
        match (&self.src, &self.dst) {
            (Some(s), Some(d)) => Ok((s.as_fd(), d.as_fd())),
            _ => Err(Errno::BADF),
        }
    }
}

fn id_of(fd: BorrowedFd<'_>) -> rustix::io::Result<(u64, u64)> {
    let st = rfs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// Opens the parent of `child` through `..`; `ESTALE` unless it is the directory `id`.
fn reopen_parent(child: BorrowedFd<'_>, id: (u64, u64)) -> rustix::io::Result<Option<OwnedFd>> {
    let fd = tree::open_dir_at(child, c"..")?;
    Ok((id_of(fd.as_fd())? == id).then_some(fd))
}

/// What merging one staged entry leaves to do.
enum Merged {
    Done,
    /// A directory to merge into one the layer already has.
    Into(Box<Frame>),
}

impl Merger {
    /// The opaque xattr, when the layer lies over lowers.
    fn overlay(&self) -> Option<&'static CStr> {
        (!self.lowers.is_empty()).then_some(self.opaque)
    }

    /// Walks the merged view (the layer, then the layers below) to directory `rel`; see
    /// [`merged_view::walk`].
    fn walk(&self, rel: &[u8], reach: Reach) -> rustix::io::Result<Option<Level>> {
        let layers: Vec<BorrowedFd<'_>> = std::iter::once(&self.target)
            .chain(self.lowers.iter())
            .map(|f| f.as_fd())
            .collect();
        merged_view::walk(&layers, rel, self.overlay(), reach, &|src, dst| {
            let st = rfs::fstat(src)?;
            copy_dir_meta(src, &st, dst)
        })
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

    /// Deletes `path` from the view: nothing when the view has nothing there (a deleted or
    /// missing parent included); over lower layers, an overlay whiteout where they have it.
    fn delete(&mut self, path: &[u8]) -> rustix::io::Result<()> {
        let (parent, base) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        let name = CString::new(base).map_err(|_| Errno::INVAL)?;
        let Some(level) = self.walk(parent, Reach::Look)? else {
            return Ok(());
        };
        let below = Level {
            dirs: level
                .dirs
                .iter()
                .filter(|(i, _)| *i > 0)
                .map(|(i, fd)| Ok((*i, fd.try_clone().map_err(|_| Errno::BADF)?)))
                .collect::<rustix::io::Result<_>>()?,
        };
        let shadowed = !matches!(
            merged_view::step(&below, &name, Some(self.opaque))?,
            Found::Missing | Found::Whiteout
        );
        if level.top().is_none() && !shadowed {
            return Ok(());
        }
        drop(level);
        let Some(level) = self.walk(parent, Reach::CopyUp)? else {
            return Ok(());
        };
        let Some(dir) = level.top() else {
            return Ok(());
        };
        let dir = dir.try_clone_to_owned().map_err(|_| Errno::BADF)?;
        self.trash(dir.as_fd(), &name)?;
        if !shadowed {
            return Ok(());
        }
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
        let Some(level) = self.walk(path, Reach::CopyUp)? else {
            return Ok(());
        };
        let Some(dir) = level.top() else {
            return Ok(());
        };
        let dir = dir.try_clone_to_owned().map_err(|_| Errno::BADF)?;
        // Reached through a symlink to the layer root: an opaque root hides nothing (overlayfs
        // ignores it), and the root may hold the staging directory itself.
        if same_inode(dir.as_fd(), self.target.as_fd())? {
            return Ok(());
        }
        for name in tree::list_dir(dir.as_fd())? {
            self.trash(dir.as_fd(), &name)?;
        }
        if let Some(opaque) = self.overlay() {
            rfs::fsetxattr(&dir, opaque, b"y", rfs::XattrFlags::empty())?;
        }
        Ok(())
    }

    /// Merges the staged tree `src` into `dst`, depth first without recursion; `below` when
    /// layers below may have a directory at the root.
    fn merge_tree(&mut self, src: OwnedFd, dst: OwnedFd, below: bool) -> rustix::io::Result<()> {
        let mut rel: Vec<u8> = Vec::new();
        let mut stack = vec![Frame::new(src, dst, 0, below, None)?];
        // frames below this index have their descriptors closed
        let mut open_from = 0;
        while let Some(top) = stack.last_mut() {
            if top.next < top.names.len() {
                let name = top.names[top.next].clone();
                top.next += 1;
                let len = rel.len();
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(name.to_bytes());
                let (s, d) = top.fds()?;
                let merged = self.merge_entry(s, d, &name, &rel, len, top.below)?;
                if !std::mem::replace(&mut self.merged_one, true) {
                    crate::failpoint::hit("apply.merge.mid-tree");
                }
                match merged {
                    Merged::Done => rel.truncate(len),
                    Merged::Into(frame) => {
                        stack.push(*frame);
                        if stack.len() - open_from > OPEN_FRAMES {
                            stack[open_from].src = None;
                            stack[open_from].dst = None;
                            open_from += 1;
                        }
                    }
                }
                continue;
            }
            let Some(done) = stack.pop() else { break };
            let Some((name, st, implicit)) = &done.sub else {
                break;
            };
            let (dsrc, ddst) = done.fds()?;
            let parent_index = stack.len().checked_sub(1).ok_or(Errno::INVAL)?;
            let parent = &mut stack[parent_index];
            if parent.src.is_none() || parent.dst.is_none() {
                parent.src = Some(reopen_parent(dsrc, parent.src_id)?.ok_or(Errno::STALE)?);
                parent.dst = match reopen_parent(ddst, parent.dst_id)? {
                    Some(fd) => Some(fd),
                    // reached through a symlink: walk the view to it again
                    None => {
                        let level = self
                            .walk(&rel[..done.rel_len], Reach::Look)?
                            .ok_or(Errno::STALE)?;
                        let fd = level.top().ok_or(Errno::STALE)?.try_clone_to_owned();
                        let fd = fd.map_err(|_| Errno::BADF)?;
                        if id_of(fd.as_fd())? != parent.dst_id {
                            return Err(Errno::STALE);
                        }
                        Some(fd)
                    }
                };
                open_from = parent_index;
            }
            if !implicit {
                copy_dir_meta(dsrc, st, ddst)?;
            } else if let Some((sec, nsec)) = done.kept_mtime {
                // The archive does not describe a directory it only implies: it keeps its
                // metadata, mtime included (adding entries changed it), so applying the
                // same layers gives the same tree, and the same diff, every time.
                set_mtime(ddst, sec, nsec)?;
            }
            let (psrc, _) = parent.fds()?;
            match rfs::unlinkat(psrc, name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
            rel.truncate(done.rel_len);
        }
        Ok(())
    }

    /// The layer's directory at `rel` as the view has it, created (or copied up) where
    /// missing, and whether lower layers take part in it.
    fn view_dir(&mut self, rel: &[u8]) -> rustix::io::Result<Option<(OwnedFd, bool)>> {
        let (parent, last) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        let (start, suffix) = match self.view.take() {
            Some((r, pos)) if r == parent && !r.is_empty() => (Some(pos), last),
            _ => (None, rel),
        };
        let layers: Vec<BorrowedFd<'_>> = std::iter::once(&self.target)
            .chain(self.lowers.iter())
            .map(|f| f.as_fd())
            .collect();
        let pos = merged_view::walk_from(
            &layers,
            start,
            suffix,
            self.overlay(),
            Reach::Create,
            &|src, dst| {
                let st = rfs::fstat(src)?;
                copy_dir_meta(src, &st, dst)
            },
        )?;
        let Some(pos) = pos else { return Ok(None) };
        let found = match pos.level.dirs.first() {
            Some((0, fd)) => Some((
                fd.try_clone().map_err(|_| Errno::BADF)?,
                pos.level.has_lowers(),
            )),
            _ => None,
        };
        self.view = Some((rel.to_vec(), pos));
        Ok(found)
    }

    fn merge_entry(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &CStr,
        rel: &[u8],
        rel_len: usize,
        below: bool,
    ) -> rustix::io::Result<Merged> {
        let st = rfs::statat(src, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let implicit = self.implicit.contains(rel);
            // A directory only implied by the archive is the directory the view has there,
            // following a symlink as tar and the container would (lib -> usr/lib), and
            // created where missing (containerd's rule, on every backend); over lower
            // layers, copied up.
            let existing = match tree::open_dir_at(dst, name) {
                Ok(fd) => Some((fd, below)),
                Err(Errno::LOOP) | Err(Errno::NOTDIR) if implicit => self.view_dir(rel)?,
                Err(Errno::NOENT) if implicit && below => self.view_dir(rel)?,
                Err(Errno::NOENT) | Err(Errno::LOOP) | Err(Errno::NOTDIR) => None,
                Err(e) => return Err(e),
            };
            if let Some((target, below)) = existing {
                let sub = tree::open_dir_at(src, name)?;
                let kept_mtime = if implicit {
                    let st = rfs::fstat(&target)?;
                    Some((st.st_mtime, st.st_mtime_nsec as i64))
                } else {
                    None
                };
                let mut frame = Frame::new(
                    sub,
                    target,
                    rel_len,
                    below,
                    Some((name.to_owned(), st, implicit)),
                )?;
                frame.kept_mtime = kept_mtime;
                return Ok(Merged::Into(Box::new(frame)));
            }
        }
        match rfs::renameat(src, name, dst, name) {
            Ok(()) => Ok(Merged::Done),
            Err(Errno::ISDIR) | Err(Errno::NOTDIR) | Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => {
                self.trash(dst, name)?;
                rfs::renameat(src, name, dst, name)?;
                // Over lower layers, a directory that replaces something else (a whiteout, a
                // file) must hide what the lower layers have at that path, as the kernel's
                // own replacement would.
                if let (Some(opaque), FileType::Directory) =
                    (self.overlay(), FileType::from_raw_mode(st.st_mode))
                {
                    let d = tree::open_dir_at(dst, name)?;
                    rfs::fsetxattr(&d, opaque, b"y", rfs::XattrFlags::empty())?;
                }
                Ok(Merged::Done)
            }
            Err(e) => Err(e),
        }
    }
}

/// Sets the mtime of `dir` (not its atime).
fn set_mtime(dir: BorrowedFd<'_>, sec: i64, nsec: i64) -> rustix::io::Result<()> {
    rfs::futimens(
        dir,
        &Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: rfs::UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: sec,
                tv_nsec: nsec as _,
            },
        },
    )
}

/// Whether two open files are one inode.
fn same_inode(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> rustix::io::Result<bool> {
    let (x, y) = (rfs::fstat(a)?, rfs::fstat(b)?);
    Ok(x.st_dev == y.st_dev && x.st_ino == y.st_ino)
}

/// Gives `dst` the owner, mode, xattrs and mtime that `src` had (`st`, taken before the merge
/// changed `src`'s mtime).
pub(super) fn copy_dir_meta(
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
