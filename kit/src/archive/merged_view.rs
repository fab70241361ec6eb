//! The tree a container sees through a layer and the layers below it, looked up one name at
//! a time the way overlayfs does: the first layer holding a name decides it, a whiteout
//! (character device 0:0) or a non-directory ends the lookup, and directories of lower
//! layers merge into the view until one is opaque.
//!
//! A walk keeps only the directories of the current level open (one per layer at most) and
//! steps from one level to the next, so its cost grows linearly with the depth of the path
//! and its open files are bounded by the number of layers. Symlinks are followed inside the
//! layer root (an absolute target starts again from the root, `..` stops at it), as the
//! container would follow them.
//!
//! For a backend whose layer directory holds the whole tree (vfs, btrfs) the view is that
//! one directory, where character devices are ordinary files; then the same walk gives the
//! same answers as resolving the path in the layer, so every backend applies an archive the
//! same way.

use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode};
use rustix::io::{Errno, Result};

use crate::tree;

/// How many symlinks one walk follows before it gives up with `ELOOP` (as the kernel does).
const MAX_HOPS: u32 = 40;

/// One directory of the view: each layer's directory at that path that takes part, top
/// first, with the layer's index (0 is the layer written to).
#[derive(Debug)]
pub(crate) struct Level {
    pub dirs: Vec<(usize, OwnedFd)>,
}

impl Level {
    /// The view's root: every layer's root (an opaque root hides nothing).
    pub fn root(layers: &[BorrowedFd<'_>]) -> Result<Level> {
        let dirs = layers
            .iter()
            .enumerate()
            .map(|(i, l)| Ok((i, l.try_clone_to_owned().map_err(|_| Errno::BADF)?)))
            .collect::<Result<_>>()?;
        Ok(Level { dirs })
    }

    /// The top layer's directory at this level, when it has one.
    pub fn top(&self) -> Option<BorrowedFd<'_>> {
        match self.dirs.first() {
            Some((0, fd)) => Some(fd.as_fd()),
            _ => None,
        }
    }

    /// Whether layers below the top one take part in this directory.
    pub fn has_lowers(&self) -> bool {
        self.dirs.iter().any(|(i, _)| *i > 0)
    }
}

/// What the view has at one name of a directory.
#[derive(Debug)]
pub(crate) enum Found {
    /// A directory, with the layers that make it up.
    Dir(Level),
    /// A symlink with this target, in `dir` of layer `layer`.
    Symlink {
        target: Vec<u8>,
        layer: usize,
        dir: OwnedFd,
    },
    /// Another non-directory, in `dir` of layer `layer`.
    Entry { layer: usize, dir: OwnedFd },
    /// Deleted by a whiteout (overlay views only).
    Whiteout,
    /// Nothing.
    Missing,
}

/// Looks `name` up in `level`; `overlay` (the opaque xattr's name) when character devices
/// 0:0 are whiteouts and that xattr counts.
pub(crate) fn step(level: &Level, name: &CStr, overlay: Option<&CStr>) -> Result<Found> {
    let mut dirs = Vec::new();
    for (i, fd) in &level.dirs {
        let st = match rfs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e),
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::Directory {
            let d = tree::open_dir_at(fd.as_fd(), name)?;
            let opaque = overlay.is_some_and(|x| is_opaque(d.as_fd(), x));
            dirs.push((*i, d));
            if opaque {
                break;
            }
            continue;
        }
        // a non-directory below a directory is hidden by it
        if !dirs.is_empty() {
            break;
        }
        let dir = fd.try_clone().map_err(|_| Errno::BADF)?;
        return Ok(match ft {
            FileType::Symlink => Found::Symlink {
                target: rfs::readlinkat(fd, name, Vec::new())?.into_bytes(),
                layer: *i,
                dir,
            },
            FileType::CharacterDevice if overlay.is_some() && st.st_rdev == 0 => Found::Whiteout,
            _ => Found::Entry { layer: *i, dir },
        });
    }
    Ok(if dirs.is_empty() {
        Found::Missing
    } else {
        Found::Dir(Level { dirs })
    })
}

fn is_opaque(dir: BorrowedFd<'_>, xattr: &CStr) -> bool {
    let mut v = [0u8; 1];
    matches!(rfs::fgetxattr(dir, xattr, &mut v), Ok(1) if v[0] == b'y')
}

/// What a walk may change in the top layer to reach a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Nothing: only look (the result's [`Level::top`] may be absent).
    Look,
    /// Copy directories of lower layers up into the top layer (with their metadata).
    CopyUp,
    /// Copy up, and create missing directories (`0755 root:root`), as tar does for the
    /// parents an archive only implies.
    Create,
}

/// Where a walk stands: the directory of the view it reached, the resolved names from the
/// root to it (symlinks already followed), and how many symlinks it followed on the way.
#[derive(Debug)]
pub(crate) struct Position {
    pub level: Level,
    path: Vec<Vec<u8>>,
    hops: u32,
}

/// Walks the view of `layers` (top first) to directory `rel`, following symlinks inside the
/// root. `None` when the way holds a non-directory, a whiteout, or (unless `reach` is
/// [`Reach::Create`]) nothing. With [`Reach::CopyUp`] or [`Reach::Create`] the result's
/// [`Level::top`] exists.
pub(crate) fn walk(
    layers: &[BorrowedFd<'_>],
    rel: &[u8],
    overlay: Option<&CStr>,
    reach: Reach,
    copy_meta: &dyn Fn(BorrowedFd<'_>, BorrowedFd<'_>) -> Result<()>,
) -> Result<Option<Level>> {
    Ok(walk_from(layers, None, rel, overlay, reach, copy_meta)?.map(|p| p.level))
}

/// [`walk`], starting from `start` (the root when `None`) instead of the root: `rel` is then
/// relative to where `start` stands, and the symlinks it followed count against the limit.
/// A caller that goes down a tree one directory at a time keeps the last position and pays
/// one step per level instead of a walk from the root.
pub(crate) fn walk_from(
    layers: &[BorrowedFd<'_>],
    start: Option<Position>,
    rel: &[u8],
    overlay: Option<&CStr>,
    reach: Reach,
    copy_meta: &dyn Fn(BorrowedFd<'_>, BorrowedFd<'_>) -> Result<()>,
) -> Result<Option<Position>> {
    let root = || Level::root(layers);
    let (mut level, mut path, mut hops) = match start {
        Some(p) => (p.level, p.path, p.hops),
        None => (root()?, Vec::new(), 0),
    };
    let mut todo: VecDeque<Vec<u8>> = split(rel).collect();
    while let Some(c) = todo.pop_front() {
        if c == b".." {
            // rare (symlink targets): walk the resolved path again from the root
            path.pop();
            let mut again = root()?;
            for p in &path {
                match descend(&again, p, overlay, reach, copy_meta)? {
                    Descend::Into(next) => again = next,
                    _ => return Ok(None),
                }
            }
            level = again;
            continue;
        }
        match descend(&level, &c, overlay, reach, copy_meta)? {
            Descend::Into(next) => {
                level = next;
                path.push(c);
            }
            Descend::Stop => return Ok(None),
            Descend::Follow(target) => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(Errno::LOOP);
                }
                if target.first() == Some(&b'/') {
                    path.clear();
                    level = root()?;
                }
                for (i, t) in split(&target).enumerate() {
                    todo.insert(i, t);
                }
            }
        }
    }
    Ok(Some(Position { level, path, hops }))
}

enum Descend {
    Into(Level),
    Follow(Vec<u8>),
    Stop,
}

fn descend(
    level: &Level,
    c: &[u8],
    overlay: Option<&CStr>,
    reach: Reach,
    copy_meta: &dyn Fn(BorrowedFd<'_>, BorrowedFd<'_>) -> Result<()>,
) -> Result<Descend> {
    let name = CString::new(c).map_err(|_| Errno::INVAL)?;
    let make = |meta_from: Option<BorrowedFd<'_>>| -> Result<Option<OwnedFd>> {
        let Some(top) = level.top() else {
            return Ok(None);
        };
        match rfs::mkdirat(top, &name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        let fd = match tree::open_dir_at(top, &name) {
            Ok(fd) => fd,
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(src) = meta_from {
            copy_meta(src, fd.as_fd())?;
        }
        Ok(Some(fd))
    };
    Ok(match step(level, &name, overlay)? {
        Found::Dir(mut next) => {
            if next.top().is_none() && reach != Reach::Look {
                let Some(fd) = make(next.dirs.first().map(|(_, d)| d.as_fd()))? else {
                    return Ok(Descend::Stop);
                };
                next.dirs.insert(0, (0, fd));
            }
            Descend::Into(next)
        }
        Found::Missing if reach == Reach::Create => match make(None)? {
            Some(fd) => Descend::Into(Level {
                dirs: vec![(0, fd)],
            }),
            None => Descend::Stop,
        },
        Found::Symlink { target, .. } => Descend::Follow(target),
        Found::Missing | Found::Whiteout | Found::Entry { .. } => Descend::Stop,
    })
}

fn split(p: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    p.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}
