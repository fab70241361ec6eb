//! Filesystem tree operations that never follow symlinks: removal, unique directories,
//! xattrs and metadata through file descriptors.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

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

/// The extended attributes of an open file or directory, sorted by name.
pub fn fd_xattrs(fd: BorrowedFd<'_>) -> rustix::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    xattrs_with(
        |buf| rfs::flistxattr(fd, buf),
        |name, buf| rfs::fgetxattr(fd, name, buf),
    )
}

/// The extended attributes of `path` itself (a symlink is not followed), sorted by name.
pub fn path_xattrs(path: &Path) -> rustix::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    xattrs_with(
        |buf| rfs::llistxattr(path, buf),
        |name, buf| rfs::lgetxattr(path, name, buf),
    )
}

fn xattrs_with(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&CStr, &mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut buf = vec![0u8; 1024];
    let n = loop {
        match list(&mut buf) {
            Ok(n) => break n,
            Err(Errno::RANGE) => {
                let need = list(&mut [])?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(Errno::NOTSUP) | Err(Errno::PERM) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut value = vec![0u8; 256];
    for name in buf[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let cname = CString::new(name).map_err(|_| Errno::INVAL)?;
        let len = loop {
            match get(&cname, &mut value) {
                Ok(len) => break Some(len),
                Err(Errno::RANGE) => {
                    let need = get(&cname, &mut [])?;
                    value.resize(need.max(value.len() * 2), 0);
                }
                Err(Errno::NODATA) => break None, // removed meanwhile
                Err(e) => return Err(e),
            }
        };
        if let Some(len) = len {
            out.push((name.to_vec(), value[..len].to_vec()));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether an xattr is private to a backend and never exported or compared.
pub fn is_private_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Copies the non-directory entry `name` of `src` to `dst_name` in `dst` (which must not
/// exist) with its data, owner, mode, xattrs and mtime; symlinks and nodes are recreated.
pub fn copy_entry_at(
    src: BorrowedFd<'_>,
    name: &CStr,
    dst: BorrowedFd<'_>,
    dst_name: &CStr,
) -> rustix::io::Result<()> {
    let st = rfs::statat(src, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let ft = FileType::from_raw_mode(st.st_mode);
    let xattrs = match ft {
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
            let mut left = st.st_size as u64;
            while left > 0 {
                let n = match rfs::copy_file_range(
                    &from,
                    None,
                    &to,
                    None,
                    left.min(1 << 30) as usize,
                ) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(Errno::XDEV)
                    | Err(Errno::INVAL)
                    | Err(Errno::NOSYS)
                    | Err(Errno::OPNOTSUPP) => {
                        let mut f = std::fs::File::from(from.try_clone().map_err(|_| Errno::BADF)?);
                        let mut t = std::fs::File::from(to.try_clone().map_err(|_| Errno::BADF)?);
                        std::io::copy(&mut f, &mut t)
                            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
                        break;
                    }
                    Err(e) => return Err(e),
                };
                left -= n as u64;
            }
            let x = fd_xattrs(from.as_fd())?;
            rfs::fchown(
                &to,
                Some(rfs::Uid::from_raw(st.st_uid)),
                Some(rfs::Gid::from_raw(st.st_gid)),
            )?;
            rfs::fchmod(&to, Mode::from_raw_mode(st.st_mode & 0o7777))?;
            x
        }
        FileType::Symlink => {
            let target = rfs::readlinkat(src, name, Vec::new())?;
            rfs::symlinkat(target.as_c_str(), dst, dst_name)?;
            rfs::chownat(
                dst,
                dst_name,
                Some(rfs::Uid::from_raw(st.st_uid)),
                Some(rfs::Gid::from_raw(st.st_gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            path_xattrs(&proc_path(src, name))?
        }
        FileType::Directory => return Err(Errno::ISDIR),
        _ => {
            rfs::mknodat(dst, dst_name, ft, Mode::from_raw_mode(0o600), st.st_rdev)?;
            rfs::chownat(
                dst,
                dst_name,
                Some(rfs::Uid::from_raw(st.st_uid)),
                Some(rfs::Gid::from_raw(st.st_gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            rfs::chmodat(
                dst,
                dst_name,
                Mode::from_raw_mode(st.st_mode & 0o7777),
                AtFlags::empty(),
            )?;
            path_xattrs(&proc_path(src, name))?
        }
    };
    let p = proc_path(dst, dst_name);
    for (k, v) in xattrs {
        if !is_private_xattr(&k) {
            let k = CString::new(k).map_err(|_| Errno::INVAL)?;
            rfs::lsetxattr(&p, &k, &v, rfs::XattrFlags::empty())?;
        }
    }
    let ts = rfs::Timestamps {
        last_access: rfs::Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: rfs::Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    };
    rfs::utimensat(dst, dst_name, &ts, AtFlags::SYMLINK_NOFOLLOW)
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
