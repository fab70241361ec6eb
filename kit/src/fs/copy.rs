//! The one copier of file data and metadata, for vfs's tree copies and the archive's copies
//! of single entries.
//!
//! * data: `FICLONE` (reflink) first, then `copy_file_range`, then `pread`/`pwrite`; a method
//!   the filesystem does not support is not tried again for the rest of the copy
//!   ([`Methods`], shared by the threads of one copy); holes in sparse files are kept
//!   (`SEEK_DATA`/`SEEK_HOLE`);
//! * metadata in the order chown, xattrs, chmod, timestamps, after the data: chown clears
//!   setuid/setgid and `security.capability`, writing data clears `security.capability`,
//!   setting an access ACL rewrites the mode and chmod rewrites the ACL mask.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{self as rfs, Mode, SeekFrom, Stat, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

/// The data-copy methods not yet found unsupported by the filesystems of one copy.
#[derive(Debug)]
pub struct Methods {
    /// `FICLONE` has not failed for lack of support yet.
    reflink: AtomicBool,
    /// `copy_file_range` has not failed for lack of support yet.
    copy_file_range: AtomicBool,
}

impl Methods {
    /// Tries the methods enabled here (tests and benchmarks turn some off).
    pub fn new(reflink: bool, copy_file_range: bool) -> Self {
        Methods {
            reflink: AtomicBool::new(reflink),
            copy_file_range: AtomicBool::new(copy_file_range),
        }
    }
}

impl Default for Methods {
    fn default() -> Self {
        Methods::new(true, true)
    }
}

/// How file data was copied, for status and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    /// Non-directory entries created (regular files, symlinks, devices,
    /// fifos, sockets); additional names of a hard-linked inode are counted
    /// in `hardlinks` instead.
    pub files: u64,
    /// Directories created, the destination root included.
    pub dirs: u64,
    /// Logical size (`st_size`) of the regular files whose data was copied.
    pub bytes: u64,
    /// Regular files whose data was shared with `FICLONE` (reflink).
    pub reflinked: u64,
    /// Regular files copied with `copy_file_range`.
    pub copy_file_range: u64,
    /// Regular files copied (at least partly) with plain `pread`/`pwrite`.
    pub read_write: u64,
    /// Entries created as hard links to an earlier copy of the same inode.
    pub hardlinks: u64,
}

impl CopyStats {
    /// Adds `o`'s counts to these.
    pub fn add(&mut self, o: &CopyStats) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.bytes += o.bytes;
        self.reflinked += o.reflinked;
        self.copy_file_range += o.copy_file_range;
        self.read_write += o.read_write;
        self.hardlinks += o.hardlinks;
    }
}

/// Size of the buffer of the read/write fallback.
const RW_BUF: usize = 256 * 1024;
/// Largest single `copy_file_range` request.
const CFR_CHUNK: u64 = 1 << 30;

/// Which tree a failed operation was working on, for the error message.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    /// The tree being copied.
    Src,
    /// The copy.
    Dst,
}

/// A failed system call, before the path is attached.
#[derive(Debug)]
pub struct Fail {
    /// The operation.
    pub op: &'static str,
    /// Which tree.
    pub side: Side,
    /// What it failed with.
    pub errno: Errno,
    /// Extra detail (an xattr name, for example).
    pub detail: Option<String>,
}

/// A copy step's result.
pub type Res<T> = Result<T, Fail>;

/// A failure of `op` on the source.
pub fn on_src(op: &'static str) -> impl FnOnce(Errno) -> Fail {
    move |errno| Fail {
        op,
        side: Side::Src,
        errno,
        detail: None,
    }
}

/// A failure of `op` on the destination.
pub fn on_dst(op: &'static str) -> impl FnOnce(Errno) -> Fail {
    move |errno| Fail {
        op,
        side: Side::Dst,
        errno,
        detail: None,
    }
}

/// atime and mtime of `st`, nanoseconds included (the field types differ
/// between architectures).
#[allow(clippy::unnecessary_cast)]
pub fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: timespec(st.st_atime as i64, st.st_atime_nsec as i64),
        last_modification: timespec(st.st_mtime as i64, st.st_mtime_nsec as i64),
    }
}

/// A `Timespec` of `sec` and `nsec`.
pub fn timespec(sec: i64, nsec: i64) -> Timespec {
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    }
}

/// Copies file data and fd-based metadata; owns the reusable buffers.
pub struct DataCopier<'a> {
    methods: &'a Methods,
    /// Xattrs not to copy (a backend's private ones).
    skip_xattr: fn(&[u8]) -> bool,
    /// Set when the current file needed the read/write fallback.
    used_rw: bool,
    rw_buf: Vec<u8>,
    xattr_names: Vec<u8>,
    xattr_value: Vec<u8>,
    /// `/proc/self/fd/<dirfd>/<name>` of the source and destination.
    src_path: Vec<u8>,
    dst_path: Vec<u8>,
    /// What it copied.
    pub stats: CopyStats,
}

impl<'a> DataCopier<'a> {
    /// A copier trying the data methods `methods` still allows.
    pub fn new(methods: &'a Methods) -> Self {
        Self {
            methods,
            skip_xattr: |_| false,
            used_rw: false,
            rw_buf: Vec::new(),
            xattr_names: vec![0; 1024],
            xattr_value: vec![0; 1024],
            src_path: Vec::with_capacity(64),
            dst_path: Vec::with_capacity(64),
            stats: CopyStats::default(),
        }
    }

    /// The same, leaving out the xattrs `skip` names.
    pub fn skipping(mut self, skip: fn(&[u8]) -> bool) -> Self {
        self.skip_xattr = skip;
        self
    }

    /// Copies the data of the regular file `s` (described by `st`) into
    /// the new, empty file `d`.
    pub fn copy_data(&mut self, s: BorrowedFd<'_>, d: BorrowedFd<'_>, st: &Stat) -> Res<()> {
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if size == 0 {
            return Ok(());
        }
        self.stats.bytes += size;
        if self.methods.reflink.load(Ordering::Relaxed) {
            match rfs::ioctl_ficlone(d, s) {
                Ok(()) => {
                    self.stats.reflinked += 1;
                    return Ok(());
                }
                Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY) => {
                    self.methods.reflink.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(on_dst("clone")(e)),
            }
        }
        self.used_rw = false;
        let allocated = u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512);
        if allocated < size {
            self.copy_sparse(s, d, size)?;
        } else {
            self.copy_range(s, d, 0, size)?;
        }
        if self.used_rw {
            self.stats.read_write += 1;
        } else {
            self.stats.copy_file_range += 1;
        }
        Ok(())
    }

    /// Copies only the data extents of `s`, leaving holes in `d`.
    fn copy_sparse(&mut self, s: BorrowedFd<'_>, d: BorrowedFd<'_>, size: u64) -> Res<()> {
        let mut pos = 0;
        while pos < size {
            let data = match rfs::seek(s, SeekFrom::Data(pos)) {
                Ok(data) => data,
                Err(Errno::NXIO) => break,
                Err(Errno::INVAL | Errno::OPNOTSUPP) if pos == 0 => {
                    // No SEEK_DATA support: copy everything.
                    return self.copy_range(s, d, 0, size);
                }
                Err(e) => return Err(on_src("seek data")(e)),
            };
            if data >= size {
                break;
            }
            let hole = rfs::seek(s, SeekFrom::Hole(data))
                .map_err(on_src("seek hole"))?
                .min(size);
            if hole <= data {
                // Cannot happen unless the file changes under us: copy the
                // rest rather than loop.
                self.copy_range(s, d, data, size - data)?;
                break;
            }
            self.copy_range(s, d, data, hole - data)?;
            pos = hole;
        }
        rfs::ftruncate(d, size).map_err(on_dst("truncate"))
    }

    /// Copies `len` bytes at `off` from `s` to the same offset in `d`.
    fn copy_range(&mut self, s: BorrowedFd<'_>, d: BorrowedFd<'_>, off: u64, len: u64) -> Res<()> {
        let end = off + len;
        let mut pos = off;
        if self.methods.copy_file_range.load(Ordering::Relaxed) {
            while pos < end {
                let mut off_in = pos;
                let mut off_out = pos;
                let chunk = (end - pos).min(CFR_CHUNK) as usize;
                match rfs::copy_file_range(s, Some(&mut off_in), d, Some(&mut off_out), chunk) {
                    // The file shrank under us.
                    Ok(0) => return Ok(()),
                    Ok(n) => pos += n as u64,
                    Err(Errno::INTR) => {}
                    Err(Errno::XDEV | Errno::OPNOTSUPP | Errno::NOSYS) => {
                        self.methods.copy_file_range.store(false, Ordering::Relaxed);
                        break;
                    }
                    // Not for this file (some special filesystems).
                    Err(Errno::INVAL) => break,
                    Err(e) => return Err(on_dst("copy_file_range")(e)),
                }
            }
            if pos >= end {
                return Ok(());
            }
        }
        self.used_rw = true;
        if self.rw_buf.is_empty() {
            self.rw_buf = vec![0; RW_BUF];
        }
        while pos < end {
            let want = (end - pos).min(self.rw_buf.len() as u64) as usize;
            let n = match rustix::io::pread(s, &mut self.rw_buf[..want], pos) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(on_src("read")(e)),
            };
            let mut done = 0;
            while done < n {
                match rustix::io::pwrite(d, &self.rw_buf[done..n], pos + done as u64) {
                    Ok(0) => return Err(on_dst("write")(Errno::IO)),
                    Ok(w) => done += w,
                    Err(Errno::INTR) => {}
                    Err(e) => return Err(on_dst("write")(e)),
                }
            }
            pos += n as u64;
        }
        Ok(())
    }

    /// Owner, xattrs, mode and times of a file or directory, through fds.
    pub fn finish_fd(
        &mut self,
        s: BorrowedFd<'_>,
        d: BorrowedFd<'_>,
        st: &Stat,
        owner_ok: bool,
    ) -> Res<()> {
        if !owner_ok {
            rfs::fchown(
                d,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
            .map_err(on_dst("chown"))?;
        }
        self.copy_xattrs_fd(s, d)?;
        rfs::fchmod(d, Mode::from_raw_mode(st.st_mode & 0o7777)).map_err(on_dst("chmod"))?;
        rfs::futimens(d, &times(st)).map_err(on_dst("utimes"))
    }

    /// Lists the xattr names of `fd` (or of `path`, not following it) into
    /// `xattr_names`; returns the length used.
    pub fn list_xattrs(&mut self, fd: BorrowedFd<'_>, path: Option<&CStr>) -> Result<usize, Errno> {
        list_into(&mut self.xattr_names, fd, path)
    }

    fn copy_xattrs_fd(&mut self, s: BorrowedFd<'_>, d: BorrowedFd<'_>) -> Res<()> {
        let n = self.list_xattrs(s, None).map_err(on_src("listxattr"))?;
        if n == 0 {
            return Ok(());
        }
        let names = std::mem::take(&mut self.xattr_names);
        let r = self.set_xattrs(&names[..n], s, None, d, None);
        self.xattr_names = names;
        r
    }

    /// Copies the xattrs of entry `name` of `sdir` to the same name in `ddir`, not
    /// following it (symlinks, devices).
    pub fn copy_xattrs_at(
        &mut self,
        sdir: BorrowedFd<'_>,
        ddir: BorrowedFd<'_>,
        name: &CStr,
    ) -> Res<()> {
        self.copy_xattrs_between(sdir, name, ddir, name)
    }

    /// Copies the xattrs of entry `name` of `sdir` to entry `dst_name` of `ddir`, following
    /// neither.
    pub fn copy_xattrs_between(
        &mut self,
        sdir: BorrowedFd<'_>,
        name: &CStr,
        ddir: BorrowedFd<'_>,
        dst_name: &CStr,
    ) -> Res<()> {
        proc_path_into(&mut self.src_path, sdir, name);
        let src_path = std::mem::take(&mut self.src_path);
        let r = self.copy_xattrs_path(&src_path, sdir, ddir, dst_name);
        self.src_path = src_path;
        r
    }

    fn copy_xattrs_path(
        &mut self,
        src_path: &[u8],
        sdir: BorrowedFd<'_>,
        ddir: BorrowedFd<'_>,
        name: &CStr,
    ) -> Res<()> {
        let spath =
            CStr::from_bytes_with_nul(src_path).map_err(|_| on_src("listxattr")(Errno::INVAL))?;
        let n = self
            .list_xattrs(sdir, Some(spath))
            .map_err(on_src("listxattr"))?;
        if n == 0 {
            return Ok(());
        }
        proc_path_into(&mut self.dst_path, ddir, name);
        let dst_path = std::mem::take(&mut self.dst_path);
        let names = std::mem::take(&mut self.xattr_names);
        let r = match CStr::from_bytes_with_nul(&dst_path) {
            Ok(dpath) => self.set_xattrs(&names[..n], sdir, Some(spath), ddir, Some(dpath)),
            Err(_) => Err(on_dst("setxattr")(Errno::INVAL)),
        };
        self.xattr_names = names;
        self.dst_path = dst_path;
        r
    }

    /// Copies each xattr of the NUL-separated `names` list.
    fn set_xattrs(
        &mut self,
        names: &[u8],
        s: BorrowedFd<'_>,
        spath: Option<&CStr>,
        d: BorrowedFd<'_>,
        dpath: Option<&CStr>,
    ) -> Res<()> {
        for name in names.split_inclusive(|&b| b == 0) {
            let Ok(name) = CStr::from_bytes_with_nul(name) else {
                continue;
            };
            if name.is_empty() || (self.skip_xattr)(name.to_bytes()) {
                continue;
            }
            let len = match get_into(&mut self.xattr_value, s, spath, name) {
                Ok(len) => len,
                // Removed since it was listed.
                Err(Errno::NODATA) => continue,
                Err(e) => return Err(xattr_fail("getxattr", Side::Src, e, name)),
            };
            let value = &self.xattr_value[..len];
            let r = match dpath {
                Some(p) => rfs::lsetxattr(p, name, value, XattrFlags::empty()),
                None => rfs::fsetxattr(d, name, value, XattrFlags::empty()),
            };
            r.map_err(|e| xattr_fail("setxattr", Side::Dst, e, name))?;
        }
        Ok(())
    }
}

fn xattr_fail(op: &'static str, side: Side, errno: Errno, name: &CStr) -> Fail {
    Fail {
        op,
        side,
        errno,
        detail: Some(name.to_string_lossy().into_owned()),
    }
}

/// Writes `/proc/self/fd/<dir>/<name>` and a NUL into `buf`: a path that
/// reaches `name` through the already open `dir` without following `name`
/// itself (for the `l*xattr` calls on entries that cannot be opened).
fn proc_path_into(buf: &mut Vec<u8>, dir: BorrowedFd<'_>, name: &CStr) {
    use std::io::Write as _;
    buf.clear();
    buf.extend_from_slice(b"/proc/self/fd/");
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "{}", dir.as_raw_fd());
    buf.push(b'/');
    buf.extend_from_slice(name.to_bytes_with_nul());
}

/// Lists the xattr names of `fd` (or of `path`, not following it) into `names`, growing it as
/// needed; returns the length used (0 where the filesystem has no xattrs).
fn list_into(names: &mut Vec<u8>, fd: BorrowedFd<'_>, path: Option<&CStr>) -> Result<usize, Errno> {
    loop {
        let r = match path {
            Some(p) => rfs::llistxattr(p, &mut names[..]),
            None => rfs::flistxattr(fd, &mut names[..]),
        };
        match r {
            Ok(n) => return Ok(n),
            Err(Errno::OPNOTSUPP) => return Ok(0),
            Err(Errno::RANGE) => {
                let need = match path {
                    Some(p) => rfs::llistxattr_query(p)?,
                    None => rfs::flistxattr_query(fd)?,
                };
                let len = need.max(names.len() * 2);
                names.resize(len, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads the value of xattr `name` of `fd` (or of `path`) into `value`, growing it as
/// needed; returns its length.
fn get_into(
    value: &mut Vec<u8>,
    fd: BorrowedFd<'_>,
    path: Option<&CStr>,
    name: &CStr,
) -> Result<usize, Errno> {
    loop {
        let r = match path {
            Some(p) => rfs::lgetxattr(p, name, &mut value[..]),
            None => rfs::fgetxattr(fd, name, &mut value[..]),
        };
        match r {
            Err(Errno::RANGE) => {
                let need = match path {
                    Some(p) => rfs::lgetxattr_query(p, name)?,
                    None => rfs::fgetxattr_query(fd, name)?,
                };
                let len = need.max(value.len() * 2);
                value.resize(len, 0);
            }
            r => return r,
        }
    }
}

/// Extended attributes: names and values, sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every xattr of `fd` (or of `path`, not following it) with its value, sorted by name; one
/// removed while being read is left out. None where the filesystem has none or refuses to
/// list them (`EOPNOTSUPP`, `EPERM`); reading a listed one fails as it fails.
pub fn read_xattrs(fd: BorrowedFd<'_>, path: Option<&CStr>) -> Result<Xattrs, Errno> {
    let mut names = vec![0u8; 1024];
    let n = match list_into(&mut names, fd, path) {
        Err(Errno::PERM) => return Ok(Vec::new()),
        r => r?,
    };
    let mut value = vec![0u8; 256];
    let mut out = Vec::new();
    for name in names[..n].split_inclusive(|&b| b == 0) {
        let Ok(name) = CStr::from_bytes_with_nul(name) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        match get_into(&mut value, fd, path, name) {
            Ok(len) => out.push((name.to_bytes().to_vec(), value[..len].to_vec())),
            Err(Errno::NODATA) => continue, // removed meanwhile
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}
