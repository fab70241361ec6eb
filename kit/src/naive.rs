//! Naive changes and sizes: walk a layer and its parent side by side and compare.
//!
//! This is the reference every native change list is checked against. A path is
//!
//! - **Added** when the parent lacks it (every entry of an added directory is reported);
//! - **Deleted** when the layer lacks it (a deleted directory is one entry);
//! - **Modified** when its type, mode, owner, device number, xattrs, or for non-directories
//!   size, mtime (with nanoseconds) or symlink target differ, and every directory with a
//!   change below it. A directory's mtime alone is not a change.
//!
//! A rewrite that keeps size and mtime cannot be seen from metadata when it happened within
//! the timestamp granularity of the original write. Like git's "racy" entries, a regular file
//! whose parent-side mtime is within [`RACY_WINDOW_SECS`] of its parent-side ctime (it was
//! written in real time, not given an old mtime by an archive) and whose size and mtime match
//! is compared by content.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};

use crate::dir_cursor::DirCursor;
use crate::tree::{self, fd_xattrs, is_private_xattr, open_dir, path_xattrs, proc_path};
use crate::{Change, ChangeKind, IoContext, Result};

/// Files whose mtime is this close to their ctime are compared by content when metadata
/// cannot tell (see the module docs).
pub const RACY_WINDOW_SECS: i64 = 2;

/// The naive diff: computes what a layer changed by walking it beside its parent.
#[derive(Debug, Clone, Copy)]
pub struct NaiveDiff;

impl NaiveDiff {
    /// The changes of the tree `layer` against the tree `parent`, sorted by path.
    pub fn changes(layer: &Path, parent: &Path) -> Result<Vec<Change>> {
        Self::walk(layer, Some(parent), None)
    }

    /// Every path of `layer` as added (a layer without a parent).
    pub fn all_added(layer: &Path) -> Result<Vec<Change>> {
        Self::walk(layer, None, None)
    }

    /// The changes of a layer kept as an overlay upper directory `upper` (whiteouts as
    /// character devices 0:0, opaque directories marked `trusted.overlay.opaque=y`, or
    /// `user.overlay.opaque=y` as `xattrs` says) over the
    /// tree `parent`, with exactly the answers [`NaiveDiff::changes`] gives for the merged
    /// tree. Only the upper directory is walked, and of the parent only what it names (and
    /// the directories made opaque), so the cost follows the size of the change.
    pub fn upper_changes(
        upper: &Path,
        parent: &Path,
        xattrs: crate::archive::OverlayXattrs,
    ) -> Result<Vec<Change>> {
        Self::walk(upper, Some(parent), Some(xattrs.opaque()))
    }

    /// The changes of `layer` against `parent` when only the paths in `may_differ` (relative,
    /// `/`-separated, with every ancestor, `""` for the root) can differ: the walk visits
    /// those and nothing else, so it costs what changed. For backends that can tell which
    /// inodes changed (btrfs generations).
    pub fn changes_within(
        layer: &Path,
        parent: &Path,
        may_differ: &HashSet<Vec<u8>>,
    ) -> Result<Vec<Change>> {
        let new = open_dir(layer)?;
        let old = open_dir(parent)?;
        let mut w = Walker {
            out: Vec::new(),
            display: layer,
            upper: None,
            only: Some(may_differ),
        };
        if may_differ.contains(&Vec::new()) {
            w.walk(new.as_fd(), Some(old.as_fd()), true)?;
        }
        Ok(w.out)
    }

    fn walk(
        layer: &Path,
        parent: Option<&Path>,
        upper: Option<&'static CStr>,
    ) -> Result<Vec<Change>> {
        let new = open_dir(layer)?;
        let old = parent.map(open_dir).transpose()?;
        let mut w = Walker {
            out: Vec::new(),
            display: layer,
            upper,
            only: None,
        };
        let full = upper.is_none_or(|x| is_opaque(new.as_fd(), x));
        w.walk(new.as_fd(), old.as_ref().map(|o| o.as_fd()), full)?;
        Ok(w.out)
    }

    /// The bytes a diff of `changes` over `layer` carries: regular files added or modified,
    /// each inode once.
    pub fn size(layer: &Path, changes: &[Change]) -> Result<u64> {
        let root = open_dir(layer)?;
        // changes come sorted: consecutive ones share directories
        let mut cursor = DirCursor::new(root.as_fd()).ctx("open directory", layer)?;
        let mut seen = HashSet::new();
        let mut total = 0;
        for c in changes.iter().filter(|c| c.kind != ChangeKind::Deleted) {
            let rel = c.path.strip_prefix("/").unwrap_or(&c.path);
            let mut names: Vec<&[u8]> = rel
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(n) => Some(n.as_bytes()),
                    _ => None,
                })
                .collect();
            let Some(base) = names.pop() else {
                continue;
            };
            let base = CString::new(base)
                .map_err(|_| rustix::io::Errno::INVAL)
                .ctx("stat", layer.join(rel))?;
            let st = match cursor
                .go_to(&names)
                .and_then(|()| rfs::statat(cursor.dir(), &base, AtFlags::SYMLINK_NOFOLLOW))
            {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => continue,
                Err(e) => return Err(e).ctx("stat", layer.join(rel)),
            };
            if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                && seen.insert((st.st_dev, st.st_ino))
            {
                total += st.st_size as u64;
            }
        }
        Ok(total)
    }
}

/// One directory being walked.
struct Frame {
    names_new: Vec<CString>,
    names_old: Vec<CString>,
    i: usize,
    j: usize,
    full: bool,
    /// Whether anything below changed so far.
    changed: bool,
    /// The length of the path of the directory above.
    rel_len: usize,
    /// Whether the parent's side has this directory (its cursor went down too).
    has_old: bool,
    /// How the directory's own entry is settled when it is done; `None` for the root.
    dir: Option<DirEntry>,
}

enum DirEntry {
    /// Added with everything below (its change is already listed).
    Added,
    /// On both sides: listed as modified at `index` if it or anything below changed.
    Compared { index: usize, meta_changed: bool },
}

/// What comparing one entry found.
enum Step {
    Changed(bool),
    Descend {
        with_old: bool,
        full: bool,
        dir: DirEntry,
    },
}

struct Walker<'a> {
    out: Vec<Change>,
    display: &'a Path,
    /// `new` is an overlay upper directory: only its names matter (plus everything of the
    /// parent below an opaque directory, marked by this xattr), and character devices 0:0
    /// are deletions.
    upper: Option<&'static CStr>,
    /// Paths (relative, `/`-separated) that may differ; entries on both sides outside it are
    /// known to be equal and are not compared.
    only: Option<&'a HashSet<Vec<u8>>>,
}

impl Walker<'_> {
    fn path(rel: &[u8]) -> PathBuf {
        let mut p = b"/".to_vec();
        p.extend_from_slice(rel);
        PathBuf::from(OsStr::from_bytes(&p))
    }

    fn push(&mut self, rel: &[u8], kind: ChangeKind) {
        self.out.push(Change {
            path: Self::path(rel),
            kind,
        });
    }

    /// The names of directory `new` and of its counterpart `old` to compare, each sorted.
    fn names(
        &self,
        new: BorrowedFd<'_>,
        old: Option<BorrowedFd<'_>>,
        here: &Path,
        full: bool,
    ) -> Result<(Vec<CString>, Vec<CString>)> {
        let mut names_new = tree::list_dir(new).ctx("read directory", here)?;
        let mut whiteouts = Vec::new();
        if self.upper.is_some() {
            // whiteouts name deletions, not entries
            let mut kept = Vec::with_capacity(names_new.len());
            for n in names_new {
                let st = rfs::statat(new, &n, AtFlags::SYMLINK_NOFOLLOW)
                    .ctx("stat", here.join(OsStr::from_bytes(n.to_bytes())))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
                    && st.st_rdev == 0
                {
                    whiteouts.push(n);
                } else {
                    kept.push(n);
                }
            }
            names_new = kept;
        }
        names_new.sort();
        let mut names_old = match old {
            Some(o) if full => tree::list_dir(o).ctx("read directory", here)?,
            Some(o) => {
                // only what the upper directory names: its whiteouts that hide something
                let mut v = Vec::new();
                for n in whiteouts {
                    match rfs::statat(o, &n, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(_) => v.push(n),
                        Err(rustix::io::Errno::NOENT) => {}
                        Err(e) => {
                            return Err(e)
                                .ctx("stat parent's", here.join(OsStr::from_bytes(n.to_bytes())))
                        }
                    }
                }
                v.extend(names_new.iter().cloned());
                v
            }
            None => Vec::new(),
        };
        names_old.sort();
        Ok((names_new, names_old))
    }

    /// Walks directory `new` (and its counterpart `old`) depth first without recursion,
    /// holding one directory open on each side whatever the depth (see [`DirCursor`]).
    fn walk(&mut self, new: BorrowedFd<'_>, old: Option<BorrowedFd<'_>>, full: bool) -> Result<()> {
        let mut cur_new = DirCursor::new(new).ctx("open directory", self.display)?;
        let mut cur_old = old
            .map(DirCursor::new)
            .transpose()
            .ctx("open directory", self.display)?;
        let mut rel: Vec<u8> = Vec::new();
        let (names_new, names_old) = self.names(new, old, self.display, full)?;
        let mut frames = vec![Frame {
            names_new,
            names_old,
            i: 0,
            j: 0,
            full,
            changed: false,
            rel_len: 0,
            has_old: old.is_some(),
            dir: None,
        }];
        loop {
            let Some(top) = frames.last_mut() else {
                return Ok(());
            };
            if top.i >= top.names_new.len() && top.j >= top.names_old.len() {
                // this directory is done: settle its own entry in the directory above
                let Some(frame) = frames.pop() else {
                    return Ok(());
                };
                let Some(dir) = frame.dir else {
                    return Ok(()); // the root
                };
                let here = self.display.join(OsStr::from_bytes(&rel));
                cur_new.up().ctx("return to the parent of", &here)?;
                if frame.has_old {
                    if let Some(c) = cur_old.as_mut() {
                        c.up().ctx("return to the parent's parent of", &here)?;
                    }
                }
                let changed = match dir {
                    DirEntry::Added => true,
                    DirEntry::Compared {
                        index,
                        meta_changed,
                    } => {
                        let changed = meta_changed || frame.changed;
                        if changed {
                            self.out.insert(
                                index,
                                Change {
                                    path: Self::path(&rel),
                                    kind: ChangeKind::Modified,
                                },
                            );
                        }
                        changed
                    }
                };
                rel.truncate(frame.rel_len);
                if let Some(parent) = frames.last_mut() {
                    parent.changed |= changed;
                }
                continue;
            }
            let ord = match (top.names_new.get(top.i), top.names_old.get(top.j)) {
                (Some(a), Some(b)) => a.cmp(b),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            let name = if ord == Ordering::Greater {
                top.names_old[top.j].clone()
            } else {
                top.names_new[top.i].clone()
            };
            let full = top.full;
            let has_old = top.has_old;
            match ord {
                Ordering::Greater => top.j += 1,
                Ordering::Less => top.i += 1,
                Ordering::Equal => {
                    top.i += 1;
                    top.j += 1;
                }
            }
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.to_bytes());
            let old_dir = if has_old {
                cur_old.as_ref().map(|c| c.dir())
            } else {
                None
            };
            let step = match ord {
                Ordering::Greater => {
                    self.push(&rel, ChangeKind::Deleted);
                    Step::Changed(true)
                }
                Ordering::Less => self.entry(cur_new.dir(), None, &name, &rel, full)?,
                Ordering::Equal if self.only.is_some_and(|o| !o.contains(rel.as_slice())) => {
                    Step::Changed(false) // known unchanged
                }
                Ordering::Equal => self.entry(cur_new.dir(), old_dir, &name, &rel, full)?,
            };
            match step {
                Step::Changed(c) => {
                    rel.truncate(len);
                    if let Some(top) = frames.last_mut() {
                        top.changed |= c;
                    }
                }
                Step::Descend {
                    with_old,
                    full,
                    dir,
                } => {
                    let here = self.display.join(OsStr::from_bytes(&rel));
                    cur_new.down(&name).ctx("open directory", &here)?;
                    if with_old {
                        if let Some(c) = cur_old.as_mut() {
                            c.down(&name).ctx("open parent's directory", &here)?;
                        }
                    }
                    let old_dir = if with_old {
                        cur_old.as_ref().map(|c| c.dir())
                    } else {
                        None
                    };
                    let (names_new, names_old) = self.names(cur_new.dir(), old_dir, &here, full)?;
                    frames.push(Frame {
                        names_new,
                        names_old,
                        i: 0,
                        j: 0,
                        full,
                        changed: false,
                        rel_len: len,
                        has_old: with_old,
                        dir: Some(dir),
                    });
                }
            }
        }
    }

    /// Compares one entry present in `new`: whether it changed, or (for a directory) how
    /// to walk it.
    fn entry(
        &mut self,
        new: BorrowedFd<'_>,
        old: Option<BorrowedFd<'_>>,
        name: &CStr,
        rel: &[u8],
        full: bool,
    ) -> Result<Step> {
        let here = self.display.join(OsStr::from_bytes(rel));
        let st_new = rfs::statat(new, name, AtFlags::SYMLINK_NOFOLLOW).ctx("stat", &here)?;
        let st_old = match old {
            Some(o) => match rfs::statat(o, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Some(st),
                Err(rustix::io::Errno::NOENT) => None,
                Err(e) => return Err(e).ctx("stat parent's", &here),
            },
            None => None,
        };
        let is_dir = |st: &Stat| FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        let index = self.out.len();
        let (Some(st_old), Some(old)) = (st_old, old) else {
            self.push(rel, ChangeKind::Added);
            if is_dir(&st_new) {
                return Ok(Step::Descend {
                    with_old: false,
                    full: true,
                    dir: DirEntry::Added,
                });
            }
            return Ok(Step::Changed(true));
        };
        let same_type = (st_new.st_mode & libc::S_IFMT) == (st_old.st_mode & libc::S_IFMT);
        if is_dir(&st_new) {
            let sub_new = tree::open_dir_at(new, name).ctx("open directory", &here)?;
            let sub_old = if same_type {
                Some(tree::open_dir_at(old, name).ctx("open parent's directory", &here)?)
            } else {
                None
            };
            let meta_changed = !same_type
                || owner_mode_differ(&st_new, &st_old)
                || xattrs_differ(
                    fd_xattrs(sub_new.as_fd()),
                    sub_old
                        .as_ref()
                        .map(|o| fd_xattrs(o.as_fd()))
                        .unwrap_or(Ok(Vec::new())),
                )
                .ctx("read xattrs of", &here)?;
            // Below an opaque upper directory the parent's entries are all hidden.
            let sub_full = full || self.upper.is_none_or(|x| is_opaque(sub_new.as_fd(), x));
            return Ok(Step::Descend {
                with_old: same_type,
                full: sub_full,
                dir: DirEntry::Compared {
                    index,
                    meta_changed,
                },
            });
        }
        let changed = !same_type
            || owner_mode_differ(&st_new, &st_old)
            || st_new.st_rdev != st_old.st_rdev
            || st_new.st_size != st_old.st_size
            || st_new.st_mtime != st_old.st_mtime
            || st_new.st_mtime_nsec != st_old.st_mtime_nsec
            || self
                .link_or_content_differs(new, old, name, &st_new, &st_old)
                .ctx("compare", &here)?
            || xattrs_differ(
                path_xattrs(&proc_path(new, name)),
                path_xattrs(&proc_path(old, name)),
            )
            .ctx("read xattrs of", &here)?;
        if changed {
            self.push(rel, ChangeKind::Modified);
        }
        Ok(Step::Changed(changed))
    }

    fn link_or_content_differs(
        &self,
        new: BorrowedFd<'_>,
        old: BorrowedFd<'_>,
        name: &CStr,
        st_new: &Stat,
        st_old: &Stat,
    ) -> rustix::io::Result<bool> {
        match FileType::from_raw_mode(st_new.st_mode) {
            FileType::Symlink => {
                let a = rfs::readlinkat(new, name, Vec::new())?;
                let b = rfs::readlinkat(old, name, Vec::new())?;
                Ok(a != b)
            }
            FileType::RegularFile
                if (st_old.st_ctime - st_old.st_mtime).abs() <= RACY_WINDOW_SECS
                    && (st_new.st_dev, st_new.st_ino) != (st_old.st_dev, st_old.st_ino) =>
            {
                contents_differ(new, old, name)
            }
            _ => Ok(false),
        }
    }
}

/// Whether an upper directory hides the parent's entries (`xattr` = `y`).
fn is_opaque(dir: BorrowedFd<'_>, xattr: &CStr) -> bool {
    let mut v = [0u8; 1];
    matches!(rfs::fgetxattr(dir, xattr, &mut v), Ok(1) if v[0] == b'y')
}

fn owner_mode_differ(a: &Stat, b: &Stat) -> bool {
    a.st_mode != b.st_mode || a.st_uid != b.st_uid || a.st_gid != b.st_gid
}

type Xattrs = rustix::io::Result<Vec<(Vec<u8>, Vec<u8>)>>;

fn xattrs_differ(a: Xattrs, b: Xattrs) -> rustix::io::Result<bool> {
    let (mut a, mut b) = (a?, b?);
    a.retain(|(k, _)| !is_private_xattr(k));
    b.retain(|(k, _)| !is_private_xattr(k));
    Ok(a != b)
}

fn contents_differ(
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
    name: &CStr,
) -> rustix::io::Result<bool> {
    // O_NOATIME: comparing must not touch the inodes (a generation-based change list would
    // then see every compared file as changed); refused for files the caller does not own
    // unless privileged, so fall back.
    let open = |d: BorrowedFd<'_>| -> rustix::io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rfs::openat(d, name, flags | OFlags::NOATIME, Mode::empty()) {
            Err(rustix::io::Errno::PERM) => rfs::openat(d, name, flags, Mode::empty()),
            r => r,
        }
    };
    let (mut a, mut b) = (File::from(open(new)?), File::from(open(old)?));
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut a, &mut ba)?;
        let nb = read_full(&mut b, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(true);
        }
        if na == 0 {
            return Ok(false);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> rustix::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))
            }
        }
    }
    Ok(n)
}
