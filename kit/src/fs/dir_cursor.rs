//! A position in a directory tree that holds one open directory whatever its depth.
//!
//! Tree walks that keep a file descriptor (and a stack frame) per level fail on deep trees:
//! with `EMFILE` past the open-file limit, with a stack overflow past a few thousand levels,
//! and with `ENAMETOOLONG` when they open by path past `PATH_MAX`. A cursor goes down by
//! name (`openat`, never following symlinks) and up through `..`, checking that `..` is the
//! directory it came from (device and inode), so a walk built on it needs one descriptor,
//! heap memory for its own bookkeeping, and no path longer than one name.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::{Errno, Result};

use crate::tree::open_dir_at;

/// A directory below a root, reached by names from it.
#[derive(Debug)]
pub struct DirCursor {
    cur: OwnedFd,
    /// The names from the root to the current directory.
    names: Vec<CString>,
    /// Device and inode of the root and of each directory on the way.
    ids: Vec<(u64, u64)>,
}

fn id_of(fd: BorrowedFd<'_>) -> Result<(u64, u64)> {
    let st = rfs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

impl DirCursor {
    /// A cursor at `root`.
    pub fn new(root: BorrowedFd<'_>) -> Result<DirCursor> {
        Ok(DirCursor {
            cur: root.try_clone_to_owned().map_err(|_| Errno::BADF)?,
            names: Vec::new(),
            ids: vec![id_of(root)?],
        })
    }

    /// The current directory.
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.cur.as_fd()
    }

    /// How many names below the root it is.
    pub fn depth(&self) -> usize {
        self.names.len()
    }

    /// The names from the root to the current directory.
    pub fn names(&self) -> &[CString] {
        &self.names
    }

    /// Goes into the subdirectory `name` (not following a symlink).
    pub fn down(&mut self, name: &CStr) -> Result<()> {
        let fd = open_dir_at(self.cur.as_fd(), name)?;
        self.ids.push(id_of(fd.as_fd())?);
        self.names.push(name.to_owned());
        self.cur = fd;
        Ok(())
    }

    /// Goes back to the parent; `ESTALE` if `..` is not the directory it came from (the tree
    /// was moved meanwhile), `EINVAL` at the root.
    pub fn up(&mut self) -> Result<()> {
        if self.names.is_empty() {
            return Err(Errno::INVAL);
        }
        let fd = rfs::openat(
            &self.cur,
            c"..",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if id_of(fd.as_fd())? != self.ids[self.ids.len() - 2] {
            return Err(Errno::STALE);
        }
        self.ids.pop();
        self.names.pop();
        self.cur = fd;
        Ok(())
    }

    /// Goes to the directory `names` below the root, up to the deepest directory shared
    /// with the current position and down from there.
    pub fn go_to(&mut self, names: &[&[u8]]) -> Result<()> {
        let common = self
            .names
            .iter()
            .zip(names)
            .take_while(|(a, b)| a.as_bytes() == **b)
            .count();
        while self.names.len() > common {
            self.up()?;
        }
        for n in &names[common..] {
            let n = CString::new(*n).map_err(|_| Errno::INVAL)?;
            self.down(&n)?;
        }
        Ok(())
    }
}
