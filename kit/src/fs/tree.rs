//! Filesystem tree operations that never follow symlinks: removal, unique directories,
//! xattrs and metadata through file descriptors.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::fs::copy::{read_xattrs, times, DataCopier, Fail, Methods, Xattrs};

use crate::dir_cursor::DirCursor;
use crate::{DriverError, IoContext, Result};

/// Opens the directory `path` (not following a final symlink) as an `O_PATH`-less fd usable
/// for `*at` calls and `readdir`.
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    open_dir_at(
        rfs::CWD,
        &CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            DriverError::io(
                "open directory",
                path,
                std::io::Error::from_raw_os_error(libc::EINVAL),
            )
        })?,
    )
    .ctx("open directory", path)
}

/// Opens `name` inside `dir` as a directory, not following symlinks.
/// With `O_NOATIME` where allowed: walking a layer must not touch its directories (btrfs's
/// generation-based change list would see them as changed).
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rfs::openat(dir, name, flags, Mode::empty()),
        r => r,
    }
}

/// Removes `path` and everything below it; a missing path is not an error. Symlinks are
/// removed, never followed, and the walk does not cross into other mounts' contents.
pub fn remove_tree(path: &Path) -> Result<()> {
    let (parent, name) = split(path)?;
    let parent_fd = match open_dir(parent) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_entry_at(parent_fd.as_fd(), &name).ctx("remove", path)
}

/// Removes the entry `name` of `dir`, recursively if it is a directory. The walk holds two
/// open directories and no stack frame per level, whatever the depth (see [`DirCursor`]).
pub fn remove_entry_at(dir: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {
            let sub = match open_dir_at(dir, name) {
                Ok(fd) => fd,
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    return rfs::unlinkat(dir, name, AtFlags::empty())
                }
                // removed meanwhile by someone else: what we wanted
                Err(Errno::NOENT) => return Ok(()),
                Err(e) => return Err(e),
            };
            empty_dir(sub.as_fd())?;
            match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Removes everything inside the directory `dir`, depth first without recursion.
pub fn empty_dir(dir: BorrowedFd<'_>) -> rustix::io::Result<()> {
    let mut cursor = DirCursor::new(dir)?;
    // per level: the names still to remove
    let mut pending: Vec<Vec<CString>> = vec![list_dir(dir)?];
    loop {
        let Some(level) = pending.last_mut() else {
            return Ok(());
        };
        if let Some(name) = level.pop() {
            match rfs::unlinkat(cursor.dir(), &name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(Errno::ISDIR) | Err(Errno::PERM) => match cursor.down(&name) {
                    Ok(()) => pending.push(list_dir(cursor.dir())?),
                    Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                        rfs::unlinkat(cursor.dir(), &name, AtFlags::empty())?
                    }
                    Err(Errno::NOENT) => {}
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            }
            continue;
        }
        // entries made meanwhile are removed too
        let again = list_dir(cursor.dir())?;
        if !again.is_empty() {
            *level = again;
            continue;
        }
        pending.pop();
        if pending.is_empty() {
            return Ok(());
        }
        let name = cursor.names().last().cloned().ok_or(Errno::INVAL)?;
        cursor.up()?;
        match rfs::unlinkat(cursor.dir(), &name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The entries of `dir` (without `.` and `..`), unsorted.
pub fn list_dir(dir: BorrowedFd<'_>) -> rustix::io::Result<Vec<CString>> {
    let mut d = rfs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(ent) = d.read() {
        let ent = ent?;
        let n = ent.file_name();
        if n != c"." && n != c".." {
            out.push(n.to_owned());
        }
    }
    Ok(out)
}

/// Creates a new directory `<parent>/<prefix>.<n>` that did not exist before.
pub fn unique_dir(parent: &Path, prefix: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(parent).ctx("create directory", parent)?;
    let pid = std::process::id();
    for n in 0u32.. {
        let p = parent.join(format!("{prefix}.{pid}.{n}"));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).ctx("create directory", &p),
        }
    }
    unreachable!("u32 exhausted")
}

fn split(path: &Path) -> Result<(&Path, CString)> {
    let bad = || {
        DriverError::io(
            "split path",
            path,
            std::io::Error::from_raw_os_error(libc::EINVAL),
        )
    };
    let parent = path.parent().ok_or_else(bad)?;
    let name = path.file_name().ok_or_else(bad)?;
    let name = CString::new(name.as_bytes()).map_err(|_| bad())?;
    Ok((parent, name))
}

/// A `/proc/self/fd/<dir>/<name>` path: resolves `dir` through its fd (already safe) and
/// names `name` without following it, for the `l*xattr` calls that have no `*at` form.
pub fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(OsStr::from_bytes(name.to_bytes()));
    p
}

/// The extended attributes of an open file or directory, sorted by name (none where the
/// filesystem has none or will not list them).
pub fn fd_xattrs(fd: BorrowedFd<'_>) -> rustix::io::Result<Xattrs> {
    read_xattrs(fd, None)
}

/// The extended attributes of `path` itself (a symlink is not followed), sorted by name.
pub fn path_xattrs(path: &Path) -> rustix::io::Result<Xattrs> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::INVAL)?;
    read_xattrs(rfs::CWD, Some(&c))
}

/// Whether an xattr is private to a backend and never exported or compared.
pub fn is_private_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Copies the non-directory entry `name` of `src` to `dst_name` in `dst` (which must not
/// exist) with the one copier ([`crate::fs::copy`]): its data (reflink first, holes kept),
/// owner, xattrs but a backend's private ones, mode, atime and mtime (as `cp -a`; the old
/// copy left atime as the copy's), in the order that keeps
/// setuid bits and capabilities; symlinks and nodes are recreated.
pub fn copy_entry_at(
    src: BorrowedFd<'_>,
    name: &CStr,
    dst: BorrowedFd<'_>,
    dst_name: &CStr,
) -> rustix::io::Result<()> {
    let st = rfs::statat(src, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let methods = Methods::default();
    let mut copier = DataCopier::new(&methods).skipping(is_private_xattr);
    let errno = |f: Fail| f.errno;
    let owner = |flags| {
        rfs::chownat(
            dst,
            dst_name,
            Some(rfs::Uid::from_raw(st.st_uid)),
            Some(rfs::Gid::from_raw(st.st_gid)),
            flags,
        )
    };
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {
            let from = rfs::openat(
                src,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let to = rfs::openat(
                dst,
                dst_name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            copier
                .copy_data(from.as_fd(), to.as_fd(), &st)
                .map_err(errno)?;
            // chown, xattrs, chmod, times
            copier
                .finish_fd(from.as_fd(), to.as_fd(), &st, false)
                .map_err(errno)
        }
        FileType::Directory => Err(Errno::ISDIR),
        ft => {
            if ft == FileType::Symlink {
                let target = rfs::readlinkat(src, name, Vec::new())?;
                rfs::symlinkat(target.as_c_str(), dst, dst_name)?;
            } else {
                rfs::mknodat(dst, dst_name, ft, Mode::from_raw_mode(0o600), st.st_rdev)?;
            }
            owner(AtFlags::SYMLINK_NOFOLLOW)?;
            copier
                .copy_xattrs_between(src, name, dst, dst_name)
                .map_err(errno)?;
            if ft != FileType::Symlink {
                rfs::chmodat(
                    dst,
                    dst_name,
                    Mode::from_raw_mode(st.st_mode & 0o7777),
                    AtFlags::empty(),
                )?;
            }
            rfs::utimensat(dst, dst_name, &times(&st), AtFlags::SYMLINK_NOFOLLOW)
        }
    }
}

/// Removes the tree at `path` by first renaming it into `trash` (same filesystem), so that a
/// crash never leaves a half-deleted tree under its name. A missing `path` is fine.
pub fn remove_via_trash(path: &Path, trash: &Path, prefix: &str) -> Result<()> {
    let doomed = unique_dir(trash, prefix)?;
    match std::fs::rename(path, &doomed) {
        Ok(()) => remove_tree(&doomed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => remove_tree(&doomed),
        Err(e) => Err(e).ctx("move to trash", path),
    }
}

/// Empties `trash` (what a crash left there). An entry that cannot be removed stays for the
/// next sweep: it belongs to no layer, so it must not keep the driver from opening.
pub fn sweep(trash: &Path) -> Result<()> {
    for ent in std::fs::read_dir(trash).ctx("read directory", trash)? {
        let _ = remove_tree(&ent.ctx("read directory", trash)?.path());
    }
    Ok(())
}

/// The entries of `dir` that are layer ids and satisfy `keep`.
pub fn layer_ids_in(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<crate::LayerId>> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir(dir).ctx("read directory", dir)? {
        let ent = ent.ctx("read directory", dir)?;
        if let Some(id) = ent
            .file_name()
            .to_str()
            .and_then(|n| crate::LayerId::new(n).ok())
        {
            if keep(&ent.path()) {
                out.push(id);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        path_xattrs(path)
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// A single entry copied through the one copier keeps what a layer's file carries: a
    /// setuid bit and a foreign owner (chown first would clear the bit), a file capability and
    /// an access ACL (chown clears the first, chmod rewrites the second's mask), and holes.
    #[test]
    fn copy_entry_at_keeps_setuid_owner_capability_acl_and_holes() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dst).unwrap();
        let f = src.join("f");
        let file = std::fs::File::create(&f).unwrap();
        // 4 KiB of data, then a 4 MiB hole
        std::os::unix::fs::FileExt::write_all_at(&file, &[7u8; 4096], 0).unwrap();
        file.set_len(4 << 20).unwrap();
        drop(file);
        std::os::unix::fs::chown(&f, Some(1000), Some(1000)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
        // VFS_CAP_REVISION_2, effective; CAP_NET_RAW permitted
        let mut cap = vec![];
        for w in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
            cap.extend_from_slice(&w.to_le_bytes());
        }
        // version 2; user::rwx, user:1001:r-x, group::r-x, mask::r-x, other::r-x
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 7u16, u32::MAX),
            (0x02, 5, 1001),
            (0x04, 5, u32::MAX),
            (0x10, 5, u32::MAX),
            (0x20, 5, u32::MAX),
        ] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        let set = |name: &str, v: &[u8]| {
            let name = CString::new(name).unwrap();
            rfs::lsetxattr(&f, &name, v, rfs::XattrFlags::empty())
        };
        if set("system.posix_acl_access", &acl).is_err() {
            eprintln!("no ACLs on /var/tmp here: the ACL part is not checked");
        }
        set("security.capability", &cap).unwrap();
        let want = std::fs::metadata(&f).unwrap();

        let (s, d) = (open_dir(&src).unwrap(), open_dir(&dst).unwrap());
        copy_entry_at(s.as_fd(), c"f", d.as_fd(), c"g").unwrap();

        let g = dst.join("g");
        let got = std::fs::metadata(&g).unwrap();
        assert_eq!((got.uid(), got.gid()), (1000, 1000));
        assert_eq!(got.mode() & 0o7777, want.mode() & 0o7777, "mode");
        assert_eq!(got.mode() & 0o4000, 0o4000, "setuid kept");
        assert_eq!(
            xattr(&g, "security.capability"),
            Some(cap),
            "capability kept"
        );
        assert_eq!(
            xattr(&g, "system.posix_acl_access"),
            xattr(&f, "system.posix_acl_access"),
            "ACL"
        );
        assert_eq!(got.len(), 4 << 20);
        assert!(
            got.blocks() * 512 < 1 << 20,
            "the 4 MiB hole was filled: {} blocks",
            got.blocks()
        );
        assert_eq!(got.mtime(), want.mtime());
        assert_eq!(std::fs::read(&g).unwrap(), std::fs::read(&f).unwrap());
    }
}
