//! Fast, exact recursive copy of a directory tree.
//!
//! Every vfs layer is a full copy of its parent, so this is the driver's hot
//! path. The copy works on directory file descriptors only (never re-resolving
//! full paths, never following a symlink inside the source or destination),
//! and preserves everything `cp -a` would plus a little more:
//!
//! * file data: `FICLONE` (reflink) first, then `copy_file_range`, then plain
//!   `pread`/`pwrite`; a method that the filesystem does not support is not
//!   retried for the rest of the copy;
//! * holes in sparse files (`SEEK_DATA`/`SEEK_HOLE`);
//! * hard links inside the tree;
//! * owner, mode (including setuid/setgid/sticky), all xattrs (any namespace,
//!   POSIX ACLs and file capabilities included) and atime/mtime with
//!   nanoseconds, on every kind of entry including symlinks;
//! * device nodes, fifos and sockets.
//!
//! Metadata is applied in the order chown, xattrs, chmod, timestamps, after
//! the data: chown clears setuid/setgid and `security.capability`, writing
//! data clears `security.capability`, setting an access ACL rewrites the mode
//! and chmod rewrites the ACL mask. Directories get their metadata after
//! their children, so that a default ACL is not inherited by the copies and
//! the mtime is not disturbed by the creation of the children.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, RawDir, SeekFrom, Stat, Timespec, Timestamps,
    XattrFlags, CWD,
};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

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

/// Copies the tree at `src` to `dst`, which must not exist yet (its parent
/// must). `dst`'s root directory gets `src`'s root mode, owner, xattrs and
/// timestamps.
///
/// `src` itself must be a directory and is not followed if it is a symlink;
/// no symlink below it is ever followed either, in the source or in the
/// destination. On error, a partial copy may be left at `dst`; the caller is
/// expected to remove it. The error message names the operation and the path
/// that failed.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<CopyStats> {
    copy_tree_with(src, dst, Methods::ALL)
}

/// Which data copy methods may be tried (all of them, outside of tests).
#[derive(Debug, Clone, Copy)]
struct Methods {
    reflink: bool,
    copy_file_range: bool,
}

impl Methods {
    const ALL: Self = Self {
        reflink: true,
        copy_file_range: true,
    };
}

fn copy_tree_with(src: &Path, dst: &Path, methods: Methods) -> io::Result<CopyStats> {
    let mut copier = Copier::new(src, dst, methods);
    let root = copier.open_root()?;
    copier.run(root)?;
    Ok(copier.data.stats)
}

/// Size of the buffer `getdents64` fills.
const DIRENT_BUF: usize = 32 * 1024;
/// Size of the buffer of the read/write fallback.
const RW_BUF: usize = 256 * 1024;
/// Largest single `copy_file_range` request.
const CFR_CHUNK: u64 = 1 << 30;

/// Kind of an entry as told by `d_type`: only a hint for which open to try.
const K_UNKNOWN: u8 = 0;
const K_REG: u8 = 1;
const K_DIR: u8 = 2;
const K_OTHER: u8 = 3;

/// Which tree a failed operation was working on, for the error message.
#[derive(Debug, Clone, Copy)]
enum Side {
    Src,
    Dst,
}

/// A failed system call, before the path is attached.
#[derive(Debug)]
struct Fail {
    op: &'static str,
    side: Side,
    errno: Errno,
    /// Extra detail (an xattr name, for example).
    detail: Option<String>,
}

type Res<T> = Result<T, Fail>;

fn on_src(op: &'static str) -> impl FnOnce(Errno) -> Fail {
    move |errno| Fail {
        op,
        side: Side::Src,
        errno,
        detail: None,
    }
}

fn on_dst(op: &'static str) -> impl FnOnce(Errno) -> Fail {
    move |errno| Fail {
        op,
        side: Side::Dst,
        errno,
        detail: None,
    }
}

/// Wraps `e` with the operation and the path, keeping its kind.
fn wrap(op: &str, path: &Path, detail: Option<&str>, e: io::Error) -> io::Error {
    let msg = match detail {
        Some(d) => format!("{op} {} ({d}): {e}", path.display()),
        None => format!("{op} {}: {e}", path.display()),
    };
    io::Error::new(e.kind(), msg)
}

fn errno_io(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno.raw_os_error())
}

/// A source directory being copied: its entries were read up front.
struct Frame {
    src: OwnedFd,
    dst: OwnedFd,
    st: Stat,
    /// Packed entries: `kind` byte, name, NUL; repeated.
    entries: Vec<u8>,
    pos: usize,
    /// Length of `Copier::rel` before this directory's name was appended.
    rel_len: usize,
    /// The destination root: its owner was not set by us at creation time.
    root: bool,
}

/// The first copy of an inode with more than one link.
struct Link {
    /// Path relative to the destination root.
    path: CString,
    /// Names of the inode not seen yet.
    left: u64,
}

struct Copier<'a> {
    src_root: &'a Path,
    dst_root: &'a Path,
    /// Destination root, to resolve `Link::path`.
    dst_root_fd: Option<OwnedFd>,
    /// (dev, ino) of the destination root, never copied into itself.
    dst_root_id: (u64, u64),
    /// Path of the directory being copied relative to the roots, `/`-joined.
    rel: Vec<u8>,
    dirent_buf: Vec<MaybeUninit<u8>>,
    /// Recycled `Frame::entries` buffers.
    pool: Vec<Vec<u8>>,
    links: HashMap<(u64, u64), Link>,
    euid: u32,
    egid: u32,
    link_target: Vec<u8>,
    data: DataCopier,
}

impl<'a> Copier<'a> {
    fn new(src_root: &'a Path, dst_root: &'a Path, methods: Methods) -> Self {
        Self {
            src_root,
            dst_root,
            dst_root_fd: None,
            dst_root_id: (u64::MAX, u64::MAX),
            rel: Vec::new(),
            dirent_buf: Vec::new(),
            pool: Vec::new(),
            links: HashMap::new(),
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
            link_target: Vec::new(),
            data: DataCopier::new(methods),
        }
    }

    /// Opens `src`, creates `dst` and reads the root's entries.
    fn open_root(&mut self) -> io::Result<Frame> {
        let src = self.src_root;
        let dst = self.dst_root;
        let sfd = rfs::openat(
            CWD,
            src,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| wrap("open", src, None, errno_io(e)))?;
        let st = rfs::fstat(&sfd).map_err(|e| wrap("stat", src, None, errno_io(e)))?;

        let name = match dst.file_name() {
            Some(n) => n,
            None => {
                return Err(wrap(
                    "create",
                    dst,
                    None,
                    io::Error::new(io::ErrorKind::InvalidInput, "no final path component"),
                ))
            }
        };
        let parent = match dst.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let pfd = rfs::openat(
            CWD,
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| wrap("open", parent, None, errno_io(e)))?;
        rfs::mkdirat(&pfd, name, Mode::from_raw_mode(0o700))
            .map_err(|e| wrap("mkdir", dst, None, errno_io(e)))?;
        let dfd = rfs::openat(
            &pfd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| wrap("open", dst, None, errno_io(e)))?;
        self.prepare_root(&dfd)
            .map_err(|f| wrap(f.op, dst, f.detail.as_deref(), errno_io(f.errno)))?;
        let dst_st = rfs::fstat(&dfd).map_err(|e| wrap("stat", dst, None, errno_io(e)))?;
        self.dst_root_id = (dst_st.st_dev, dst_st.st_ino);
        self.dst_root_fd = Some(
            rustix::io::fcntl_dupfd_cloexec(&dfd, 0)
                .map_err(|e| wrap("dup", dst, None, errno_io(e)))?,
        );

        let mut entries = Vec::new();
        self.read_entries(sfd.as_fd(), &mut entries)
            .map_err(|e| wrap("readdir", src, None, errno_io(e)))?;
        self.data.stats.dirs += 1;
        Ok(Frame {
            src: sfd,
            dst: dfd,
            st,
            entries,
            pos: 0,
            rel_len: 0,
            root: true,
        })
    }

    /// Undoes what the destination root inherited from its parent: a setgid
    /// bit (children would inherit the parent's group) and default ACLs
    /// (children would get ACLs and masked modes).
    fn prepare_root(&mut self, dfd: &OwnedFd) -> Res<()> {
        rfs::fchmod(dfd, Mode::from_raw_mode(0o700)).map_err(on_dst("chmod"))?;
        let n = self
            .data
            .list_xattrs(dfd.as_fd(), None)
            .map_err(on_dst("listxattr"))?;
        if n > 0 {
            for name in [c"system.posix_acl_default", c"system.posix_acl_access"] {
                match rfs::fremovexattr(dfd, name) {
                    Ok(()) | Err(Errno::NODATA) | Err(Errno::OPNOTSUPP) => {}
                    Err(e) => return Err(on_dst("removexattr")(e)),
                }
            }
        }
        Ok(())
    }

    /// Walks the tree depth first, without recursion.
    fn run(&mut self, root: Frame) -> io::Result<()> {
        let mut stack = vec![root];
        while let Some(top) = stack.last_mut() {
            if top.pos >= top.entries.len() {
                let Some(mut frame) = stack.pop() else { break };
                self.finish_dir(&frame).map_err(|f| self.error(f, None))?;
                self.rel.truncate(frame.rel_len);
                frame.entries.clear();
                self.pool.push(std::mem::take(&mut frame.entries));
                continue;
            }
            let start = top.pos;
            let kind = top.entries[start];
            let len = top.entries[start + 1..]
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(top.entries.len() - start - 1);
            let end = start + 1 + len;
            top.pos = end + 1;
            let name = match CStr::from_bytes_with_nul(&top.entries[start + 1..=end]) {
                Ok(n) => n,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "corrupt directory entry buffer",
                    ))
                }
            };
            match self.copy_entry(top.src.as_fd(), top.dst.as_fd(), name, kind) {
                Ok(Some(frame)) => stack.push(frame),
                Ok(None) => {}
                Err(f) => return Err(self.error(f, Some(name))),
            }
        }
        Ok(())
    }

    /// Attaches the path of `name` (or of the current directory) to `f`.
    fn error(&self, f: Fail, name: Option<&CStr>) -> io::Error {
        let mut path = PathBuf::from(match f.side {
            Side::Src => self.src_root,
            Side::Dst => self.dst_root,
        });
        if !self.rel.is_empty() {
            path.push(OsStr::from_bytes(&self.rel));
        }
        if let Some(name) = name {
            path.push(OsStr::from_bytes(name.to_bytes()));
        }
        wrap(f.op, &path, f.detail.as_deref(), errno_io(f.errno))
    }

    /// Reads all entries of `dir` but `.` and `..` into `out`.
    fn read_entries(&mut self, dir: BorrowedFd<'_>, out: &mut Vec<u8>) -> Result<(), Errno> {
        if self.dirent_buf.is_empty() {
            self.dirent_buf = Vec::with_capacity(DIRENT_BUF);
            self.dirent_buf.resize(DIRENT_BUF, MaybeUninit::uninit());
        }
        let mut iter = RawDir::new(dir, &mut self.dirent_buf[..]);
        while let Some(entry) = iter.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match entry.file_type() {
                FileType::RegularFile => K_REG,
                FileType::Directory => K_DIR,
                FileType::Unknown => K_UNKNOWN,
                _ => K_OTHER,
            };
            out.push(kind);
            out.extend_from_slice(name);
            out.push(0);
        }
        Ok(())
    }

    /// Copies one entry of `sdir` into `ddir`; returns the frame of a
    /// directory whose children are to be copied next.
    fn copy_entry(
        &mut self,
        sdir: BorrowedFd<'_>,
        ddir: BorrowedFd<'_>,
        name: &CStr,
        kind: u8,
    ) -> Res<Option<Frame>> {
        // One stat per entry: `fstat` of the opened file when `d_type` says
        // it is a file or a directory, `statat` otherwise.
        let (st, sfd) = match kind {
            K_REG => {
                let fd = open_src_file(sdir, name)?;
                (rfs::fstat(&fd).map_err(on_src("stat"))?, Some(fd))
            }
            K_DIR => {
                let fd = open_src_dir(sdir, name)?;
                (rfs::fstat(&fd).map_err(on_src("stat"))?, Some(fd))
            }
            _ => (
                rfs::statat(sdir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(on_src("stat"))?,
                None,
            ),
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::Directory {
            if (st.st_dev, st.st_ino) == self.dst_root_id {
                // The destination is inside the source: do not copy it.
                return Ok(None);
            }
            let sfd = match sfd {
                Some(fd) => fd,
                None => open_src_dir(sdir, name)?,
            };
            return self.copy_dir(sfd, ddir, name, st).map(Some);
        }

        let nlink = nlink(&st);
        if nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(link) = self.links.get_mut(&key) {
                let root = self.dst_root_fd.as_ref().ok_or(Fail {
                    op: "link",
                    side: Side::Dst,
                    errno: Errno::BADF,
                    detail: None,
                })?;
                rfs::linkat(root, link.path.as_c_str(), ddir, name, AtFlags::empty())
                    .map_err(on_dst("link"))?;
                link.left = link.left.saturating_sub(1);
                if link.left == 0 {
                    self.links.remove(&key);
                }
                self.data.stats.hardlinks += 1;
                return Ok(None);
            }
        }

        match ft {
            FileType::RegularFile => {
                let sfd = match sfd {
                    Some(fd) => fd,
                    None => open_src_file(sdir, name)?,
                };
                self.copy_file(sfd, ddir, name, &st)?;
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(sdir, name, std::mem::take(&mut self.link_target))
                    .map_err(on_src("readlink"))?;
                rfs::symlinkat(target.as_c_str(), ddir, name).map_err(on_dst("symlink"))?;
                self.link_target = target.into_bytes();
                self.finish_at(sdir, ddir, name, &st, true)?;
            }
            FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Fifo
            | FileType::Socket => {
                rfs::mknodat(
                    ddir,
                    name,
                    ft,
                    Mode::from_raw_mode(st.st_mode & 0o777),
                    st.st_rdev,
                )
                .map_err(on_dst("mknod"))?;
                self.finish_at(sdir, ddir, name, &st, false)?;
            }
            _ => {
                return Err(Fail {
                    op: "copy (unknown file type)",
                    side: Side::Src,
                    errno: Errno::INVAL,
                    detail: None,
                })
            }
        }
        self.data.stats.files += 1;

        if nlink > 1 {
            let mut path = Vec::with_capacity(self.rel.len() + 1 + name.to_bytes().len());
            if !self.rel.is_empty() {
                path.extend_from_slice(&self.rel);
                path.push(b'/');
            }
            path.extend_from_slice(name.to_bytes());
            if let Ok(path) = CString::new(path) {
                self.links.insert(
                    (st.st_dev, st.st_ino),
                    Link {
                        path,
                        left: nlink - 1,
                    },
                );
            }
        }
        Ok(None)
    }

    fn copy_dir(
        &mut self,
        sfd: OwnedFd,
        ddir: BorrowedFd<'_>,
        name: &CStr,
        st: Stat,
    ) -> Res<Frame> {
        // Created private; mode, owner, xattrs and times come after the
        // children (see `finish_dir`).
        rfs::mkdirat(ddir, name, Mode::from_raw_mode(0o700)).map_err(on_dst("mkdir"))?;
        let dfd = rfs::openat(
            ddir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(on_dst("open"))?;
        let mut entries = self.pool.pop().unwrap_or_default();
        self.read_entries(sfd.as_fd(), &mut entries)
            .map_err(on_src("readdir"))?;
        let rel_len = self.rel.len();
        if !self.rel.is_empty() {
            self.rel.push(b'/');
        }
        self.rel.extend_from_slice(name.to_bytes());
        self.data.stats.dirs += 1;
        Ok(Frame {
            src: sfd,
            dst: dfd,
            st,
            entries,
            pos: 0,
            rel_len,
            root: false,
        })
    }

    fn finish_dir(&mut self, frame: &Frame) -> Res<()> {
        let owned = !frame.root && self.owner_is_ours(&frame.st);
        self.data
            .finish_fd(frame.src.as_fd(), frame.dst.as_fd(), &frame.st, owned)
    }

    /// Whether a new entry already has `st`'s owner: entries are created
    /// with our effective ids, as no directory we create is setgid until
    /// its children are done.
    fn owner_is_ours(&self, st: &Stat) -> bool {
        st.st_uid == self.euid && st.st_gid == self.egid
    }

    fn copy_file(&mut self, sfd: OwnedFd, ddir: BorrowedFd<'_>, name: &CStr, st: &Stat) -> Res<()> {
        let dfd = rfs::openat(
            ddir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(on_dst("create"))?;
        self.data.copy_data(sfd.as_fd(), dfd.as_fd(), st)?;
        let owned = self.owner_is_ours(st);
        self.data.finish_fd(sfd.as_fd(), dfd.as_fd(), st, owned)
    }

    /// Metadata of an entry that cannot be opened (symlink, device, fifo,
    /// socket), by name in its directory.
    fn finish_at(
        &mut self,
        sdir: BorrowedFd<'_>,
        ddir: BorrowedFd<'_>,
        name: &CStr,
        st: &Stat,
        symlink: bool,
    ) -> Res<()> {
        if !self.owner_is_ours(st) {
            rfs::chownat(
                ddir,
                name,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(on_dst("chown"))?;
        }
        self.data.copy_xattrs_at(sdir, ddir, name)?;
        if !symlink {
            // mknod's mode went through the umask and has no special bits.
            rfs::chmodat(
                ddir,
                name,
                Mode::from_raw_mode(st.st_mode & 0o7777),
                AtFlags::empty(),
            )
            .map_err(on_dst("chmod"))?;
        }
        rfs::utimensat(ddir, name, &times(st), AtFlags::SYMLINK_NOFOLLOW).map_err(on_dst("utimes"))
    }
}

fn open_src_file(sdir: BorrowedFd<'_>, name: &CStr) -> Res<OwnedFd> {
    // NONBLOCK and NOCTTY in case the entry was replaced by a fifo or a tty.
    rfs::openat(
        sdir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(on_src("open"))
}

fn open_src_dir(sdir: BorrowedFd<'_>, name: &CStr) -> Res<OwnedFd> {
    rfs::openat(
        sdir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(on_src("open"))
}

/// Link count of `st` (its type differs between architectures).
#[allow(clippy::useless_conversion)]
fn nlink(st: &Stat) -> u64 {
    u64::from(st.st_nlink)
}

/// atime and mtime of `st`, nanoseconds included (the field types differ
/// between architectures).
#[allow(clippy::unnecessary_cast)]
fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: timespec(st.st_atime as i64, st.st_atime_nsec as i64),
        last_modification: timespec(st.st_mtime as i64, st.st_mtime_nsec as i64),
    }
}

fn timespec(sec: i64, nsec: i64) -> Timespec {
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    }
}

/// Copies file data and fd-based metadata; owns the reusable buffers.
struct DataCopier {
    reflink: bool,
    copy_file_range: bool,
    /// Set when the current file needed the read/write fallback.
    used_rw: bool,
    rw_buf: Vec<u8>,
    xattr_names: Vec<u8>,
    xattr_value: Vec<u8>,
    /// `/proc/self/fd/<dirfd>/<name>` of the source and destination.
    src_path: Vec<u8>,
    dst_path: Vec<u8>,
    stats: CopyStats,
}

impl DataCopier {
    fn new(methods: Methods) -> Self {
        Self {
            reflink: methods.reflink,
            copy_file_range: methods.copy_file_range,
            used_rw: false,
            rw_buf: Vec::new(),
            xattr_names: vec![0; 1024],
            xattr_value: vec![0; 1024],
            src_path: Vec::with_capacity(64),
            dst_path: Vec::with_capacity(64),
            stats: CopyStats::default(),
        }
    }

    /// Copies the data of the regular file `s` (described by `st`) into
    /// the new, empty file `d`.
    fn copy_data(&mut self, s: BorrowedFd<'_>, d: BorrowedFd<'_>, st: &Stat) -> Res<()> {
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if size == 0 {
            return Ok(());
        }
        self.stats.bytes += size;
        if self.reflink {
            match rfs::ioctl_ficlone(d, s) {
                Ok(()) => {
                    self.stats.reflinked += 1;
                    return Ok(());
                }
                Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY) => {
                    self.reflink = false;
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
            self.copy_range(s, d, data, hole - data)?;
            pos = hole;
        }
        rfs::ftruncate(d, size).map_err(on_dst("truncate"))
    }

    /// Copies `len` bytes at `off` from `s` to the same offset in `d`.
    fn copy_range(&mut self, s: BorrowedFd<'_>, d: BorrowedFd<'_>, off: u64, len: u64) -> Res<()> {
        let end = off + len;
        let mut pos = off;
        if self.copy_file_range {
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
                        self.copy_file_range = false;
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
    fn finish_fd(
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
    fn list_xattrs(&mut self, fd: BorrowedFd<'_>, path: Option<&CStr>) -> Result<usize, Errno> {
        loop {
            let r = match path {
                Some(p) => rfs::llistxattr(p, &mut self.xattr_names[..]),
                None => rfs::flistxattr(fd, &mut self.xattr_names[..]),
            };
            match r {
                Ok(n) => return Ok(n),
                Err(Errno::OPNOTSUPP) => return Ok(0),
                Err(Errno::RANGE) => {
                    let need = match path {
                        Some(p) => rfs::llistxattr_query(p)?,
                        None => rfs::flistxattr_query(fd)?,
                    };
                    let len = need.max(self.xattr_names.len() * 2);
                    self.xattr_names.resize(len, 0);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the value of xattr `name` into `xattr_value`; returns its length.
    fn get_xattr(
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

    fn copy_xattrs_at(
        &mut self,
        sdir: BorrowedFd<'_>,
        ddir: BorrowedFd<'_>,
        name: &CStr,
    ) -> Res<()> {
        proc_path(&mut self.src_path, sdir, name);
        let src_path = std::mem::take(&mut self.src_path);
        let r = self.copy_xattrs_path(&src_path, sdir, ddir, name);
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
        proc_path(&mut self.dst_path, ddir, name);
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
            if name.is_empty() {
                continue;
            }
            let len = match Self::get_xattr(&mut self.xattr_value, s, spath, name) {
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
fn proc_path(buf: &mut Vec<u8>, dir: BorrowedFd<'_>, name: &CStr) {
    use std::io::Write as _;
    buf.clear();
    buf.extend_from_slice(b"/proc/self/fd/");
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "{}", dir.as_raw_fd());
    buf.push(b'/');
    buf.extend_from_slice(name.to_bytes_with_nul());
}
