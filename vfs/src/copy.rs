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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use graphdriver_kit::fs::copy::{
    on_dst, on_src, times, CopyStats, DataCopier, Fail, Methods, Res, Side,
};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RawDir, Stat, CWD};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

/// Copies the tree at `src` to `dst`, which must not exist yet (its parent
/// must). `dst`'s root directory gets `src`'s root mode, owner, xattrs and
/// timestamps.
///
/// `src` itself must be a directory and is not followed if it is a symlink;
/// no symlink below it is ever followed either, in the source or in the
/// destination. On error, a partial copy may be left at `dst`; the caller is
/// expected to remove it. The error message names the operation and the path
/// that failed.
///
/// Regular files are filled by one worker thread while the calling thread
/// walks the tree. `/proc` must be mounted: the xattrs of symlinks and
/// special files are reached through `/proc/self/fd/<dir fd>/<name>`.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<CopyStats> {
    copy_tree_with(src, dst, Options::DEFAULT)
}

/// Knobs of `copy_tree_with`: `copy_tree` uses `Options::DEFAULT`, tests
/// and benchmarks use others.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Try `FICLONE`.
    pub(crate) reflink: bool,
    /// Try `copy_file_range`.
    pub(crate) copy_file_range: bool,
    /// Threads that copy regular files' data and metadata while the calling
    /// thread walks the tree and creates the entries (0: all inline).
    pub(crate) workers: usize,
}

impl Options {
    pub(crate) const DEFAULT: Self = Self {
        reflink: true,
        copy_file_range: true,
        workers: 1,
    };
}

/// Files handed to the workers but not picked up yet (each holds two fds).
const QUEUE: usize = 64;

/// `copy_tree` with explicit options.
pub(crate) fn copy_tree_with(src: &Path, dst: &Path, opts: Options) -> io::Result<CopyStats> {
    let shared = Shared {
        methods: Methods::new(opts.reflink, opts.copy_file_range),
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
    };
    let shared = &shared;
    std::thread::scope(|scope| {
        let mut copier = Copier::new(src, dst, shared);
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        // Only the workers hold the receiver: should they all die, sending
        // fails instead of blocking and the file is copied inline.
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(opts.workers);
        for _ in 0..opts.workers {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name("vfs-copy".into())
                .spawn_scoped(scope, move || worker(&rx, shared));
            match spawned {
                Ok(handle) => workers.push(handle),
                // Fewer workers (or none: all inline) is fine.
                Err(_) => break,
            }
        }
        drop(rx);
        if !workers.is_empty() {
            copier.jobs = Some(tx);
        }
        let walked = copier.open_root().and_then(|root| copier.run(root));
        // Closing the queue lets the workers finish what is queued and exit.
        copier.jobs = None;
        let mut stats = copier.data.stats;
        for handle in workers {
            match handle.join() {
                Ok(s) => stats.add(&s),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        walked?;
        let error = match shared.error.lock() {
            Ok(mut e) => e.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        match error {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    })
}

/// State shared by the walking thread and the workers.
struct Shared {
    /// The data-copy methods still worth trying.
    methods: Methods,
    /// A worker failed: stop walking.
    failed: AtomicBool,
    /// The first worker error.
    error: Mutex<Option<io::Error>>,
}

/// A regular file created by the walking thread, for a worker to fill.
struct Job {
    src: OwnedFd,
    dst: OwnedFd,
    st: Stat,
    owner_ok: bool,
}

/// A worker: copies the data and metadata of queued files until the queue
/// is closed; returns its share of the statistics.
fn worker(rx: &Mutex<Receiver<Job>>, shared: &Shared) -> CopyStats {
    let mut data = DataCopier::new(&shared.methods);
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { break };
        if shared.failed.load(Ordering::Relaxed) {
            // Drain the queue without working.
            continue;
        }
        if let Err(f) = fill(&mut data, &job) {
            let fd = match f.side {
                Side::Src => job.src.as_fd(),
                Side::Dst => job.dst.as_fd(),
            };
            let path = fd_path(fd);
            let e = wrap(f.op, &path, f.detail.as_deref(), errno_io(f.errno));
            let mut first = match shared.error.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            if first.is_none() {
                *first = Some(e);
            }
            shared.failed.store(true, Ordering::Relaxed);
        }
    }
    data.stats
}

/// Copies the data and metadata of a queued regular file.
fn fill(data: &mut DataCopier<'_>, job: &Job) -> Res<()> {
    let (s, d) = (job.src.as_fd(), job.dst.as_fd());
    data.copy_data(s, d, &job.st)?;
    data.finish_fd(s, d, &job.st, job.owner_ok)
}

/// The path an fd was opened with, for error messages.
fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::read_link(&link).unwrap_or_else(|_| PathBuf::from(format!("<fd {}>", fd.as_raw_fd())))
}

/// Size of the buffer `getdents64` fills.
const DIRENT_BUF: usize = 32 * 1024;
/// Kind of an entry as told by `d_type`: only a hint for which open to try.
const K_UNKNOWN: u8 = 0;
const K_REG: u8 = 1;
const K_DIR: u8 = 2;
const K_OTHER: u8 = 3;

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
    /// Closed (`None`) while the frame is more than [`OPEN_FRAMES`] below the top of the
    /// walk, opened again through `..` when the walk comes back to it.
    src: Option<OwnedFd>,
    dst: Option<OwnedFd>,
    /// Device and inode of `dst`, to check that `..` leads back to it.
    dst_id: (u64, u64),
    st: Stat,
    /// Packed entries: `kind` byte, name, NUL; repeated.
    entries: Vec<u8>,
    pos: usize,
    /// Length of `Copier::rel` before this directory's name was appended.
    rel_len: usize,
    /// The destination root: its owner was not set by us at creation time.
    root: bool,
}

/// How many directories of the walk keep their two descriptors open: a copy needs a bounded
/// number of open files whatever the depth of the tree.
const OPEN_FRAMES: usize = 32;

impl Frame {
    fn fds(&self) -> Res<(BorrowedFd<'_>, BorrowedFd<'_>)> {
        match (&self.src, &self.dst) {
            (Some(s), Some(d)) => Ok((s.as_fd(), d.as_fd())),
            _ => Err(on_src("open")(Errno::BADF)),
        }
    }

    /// Opens this frame's directories again through `..` of its child's, checking that
    /// they are the same directories (`ESTALE` when the tree was moved meanwhile).
    fn reopen(&mut self, child: &Frame) -> Res<()> {
        let (csrc, cdst) = child.fds()?;
        let src = rfs::openat(csrc, c"..", DIR, Mode::empty()).map_err(on_src("open .."))?;
        let sst = rfs::fstat(&src).map_err(on_src("stat"))?;
        if (sst.st_dev, sst.st_ino) != (self.st.st_dev, self.st.st_ino) {
            return Err(on_src("open ..")(Errno::STALE));
        }
        let dst = rfs::openat(cdst, c"..", DIR, Mode::empty()).map_err(on_dst("open .."))?;
        let dst_st = rfs::fstat(&dst).map_err(on_dst("stat"))?;
        if (dst_st.st_dev, dst_st.st_ino) != self.dst_id {
            return Err(on_dst("open ..")(Errno::STALE));
        }
        self.src = Some(src);
        self.dst = Some(dst);
        Ok(())
    }
}

/// The first copy of an inode with more than one link.
struct Link {
    /// Path relative to the destination root.
    path: CString,
    /// Names of the inode not seen yet.
    left: u64,
}

struct Copier<'a> {
    shared: &'a Shared,
    /// Queue to the workers, if any.
    jobs: Option<SyncSender<Job>>,
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
    /// Try `O_NOATIME` on the source.
    noatime: bool,
    data: DataCopier<'a>,
}

impl<'a> Copier<'a> {
    fn new(src_root: &'a Path, dst_root: &'a Path, shared: &'a Shared) -> Self {
        Self {
            shared,
            jobs: None,
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
            noatime: true,
            data: DataCopier::new(&shared.methods),
        }
    }

    /// Opens `src`, creates `dst` and reads the root's entries.
    fn open_root(&mut self) -> io::Result<Frame> {
        let src = self.src_root;
        let dst = self.dst_root;
        let sfd = match rfs::openat(CWD, src, DIR | OFlags::NOATIME, Mode::empty()) {
            Err(Errno::PERM) => {
                self.noatime = false;
                rfs::openat(CWD, src, DIR, Mode::empty())
            }
            r => r,
        }
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
        let dfd = rfs::openat(&pfd, name, DIR, Mode::empty())
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
            src: Some(sfd),
            dst: Some(dfd),
            dst_id: self.dst_root_id,
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
        // frames below this index have their descriptors closed
        let mut open_from = 0;
        while let Some(top) = stack.last_mut() {
            if self.shared.failed.load(Ordering::Relaxed) {
                // A worker failed; its error is reported by the caller.
                return Ok(());
            }
            if top.pos >= top.entries.len() {
                let Some(mut frame) = stack.pop() else { break };
                self.finish_dir(&frame).map_err(|f| self.error(f, None))?;
                if let Some(parent) = stack.last_mut() {
                    if parent.src.is_none() {
                        parent.reopen(&frame).map_err(|f| self.error(f, None))?;
                        open_from = stack.len() - 1;
                    }
                }
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
            let copied = match top.fds() {
                Ok((src, dst)) => self.copy_entry(src, dst, name, kind),
                Err(f) => Err(f),
            };
            match copied {
                Ok(Some(frame)) => {
                    stack.push(frame);
                    if stack.len() - open_from > OPEN_FRAMES {
                        stack[open_from].src = None;
                        stack[open_from].dst = None;
                        open_from += 1;
                    }
                }
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

    /// Opens `name` in the source with `flags`, and `O_NOATIME` (reading
    /// the source then does not write to it) while that is permitted.
    fn open_src(&mut self, sdir: BorrowedFd<'_>, name: &CStr, flags: OFlags) -> Res<OwnedFd> {
        if self.noatime {
            match rfs::openat(sdir, name, flags | OFlags::NOATIME, Mode::empty()) {
                // Neither the owner nor CAP_FOWNER.
                Err(Errno::PERM) => self.noatime = false,
                r => return r.map_err(on_src("open")),
            }
        }
        rfs::openat(sdir, name, flags, Mode::empty()).map_err(on_src("open"))
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
                let fd = self.open_src(sdir, name, SRC_FILE)?;
                (rfs::fstat(&fd).map_err(on_src("stat"))?, Some(fd))
            }
            K_DIR => {
                let fd = self.open_src(sdir, name, DIR)?;
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
                None => self.open_src(sdir, name, DIR)?,
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
                    None => self.open_src(sdir, name, SRC_FILE)?,
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
        let dfd = rfs::openat(ddir, name, DIR, Mode::empty()).map_err(on_dst("open"))?;
        let dst_st = rfs::fstat(&dfd).map_err(on_dst("stat"))?;
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
            src: Some(sfd),
            dst: Some(dfd),
            dst_id: (dst_st.st_dev, dst_st.st_ino),
            st,
            entries,
            pos: 0,
            rel_len,
            root: false,
        })
    }

    fn finish_dir(&mut self, frame: &Frame) -> Res<()> {
        let owned = !frame.root && self.owner_is_ours(&frame.st);
        let (src, dst) = frame.fds()?;
        self.data.finish_fd(src, dst, &frame.st, owned)
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
        let mut job = Job {
            src: sfd,
            dst: dfd,
            st: *st,
            owner_ok: self.owner_is_ours(st),
        };
        if let Some(jobs) = &self.jobs {
            match jobs.send(job) {
                Ok(()) => return Ok(()),
                // No worker left: do it here.
                Err(mpsc::SendError(j)) => job = j,
            }
        }
        fill(&mut self.data, &job)
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

/// Flags to open a source file: NONBLOCK and NOCTTY in case the entry was
/// replaced by a fifo or a tty since `d_type`/`statat` said otherwise.
const SRC_FILE: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY);
/// Flags to open a directory, in the source or the destination.
const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Link count of `st` (its type differs between architectures).
#[allow(clippy::useless_conversion)]
fn nlink(st: &Stat) -> u64 {
    u64::from(st.st_nlink)
}

#[cfg(test)]
mod tests {
    use super::*;
    use graphdriver_kit::fs::copy::timespec;
    use rustix::fs::{Timestamps, XattrFlags};
    use std::fs;
    use std::io::Read as _;
    use std::os::unix::fs::symlink;

    /// Every combination of methods and threading the copy can run with.
    const VARIANTS: [Options; 5] = [
        Options::DEFAULT,
        Options {
            workers: 0,
            ..Options::DEFAULT
        },
        Options {
            workers: 2,
            ..Options::DEFAULT
        },
        Options {
            reflink: false,
            ..Options::DEFAULT
        },
        Options {
            reflink: false,
            copy_file_range: false,
            workers: 0,
        },
    ];

    struct Fixture {
        tmp: tempfile::TempDir,
        src: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let src = tmp.path().join("src");
            fs::create_dir(&src).unwrap();
            Self { tmp, src }
        }

        fn s(&self, rel: &str) -> PathBuf {
            self.src.join(rel)
        }

        /// A fresh destination path for copy number `i`.
        fn dst(&self, i: usize) -> PathBuf {
            self.tmp.path().join(format!("dst{i}"))
        }
    }

    fn lstat(p: &Path) -> Stat {
        rfs::statat(CWD, p, AtFlags::SYMLINK_NOFOLLOW)
            .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
    }

    fn chown(p: &Path, uid: u32, gid: u32) {
        rfs::chownat(
            CWD,
            p,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    fn chmod(p: &Path, mode: u32) {
        rfs::chmodat(CWD, p, Mode::from_raw_mode(mode), AtFlags::empty()).unwrap();
    }

    fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64)) {
        let t = Timestamps {
            last_access: timespec(atime.0, atime.1),
            last_modification: timespec(mtime.0, mtime.1),
        };
        rfs::utimensat(CWD, p, &t, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    #[allow(clippy::unnecessary_cast)]
    fn mtime(st: &Stat) -> (i64, i64) {
        (st.st_mtime as i64, st.st_mtime_nsec as i64)
    }

    #[allow(clippy::unnecessary_cast)]
    fn atime(st: &Stat) -> (i64, i64) {
        (st.st_atime as i64, st.st_atime_nsec as i64)
    }

    fn set_xattr(p: &Path, name: &str, value: &[u8]) {
        rfs::lsetxattr(p, name, value, XattrFlags::empty())
            .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", p.display()));
    }

    fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0; 65536];
        match rfs::lgetxattr(p, name, &mut buf[..]) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(Errno::NODATA) => None,
            Err(e) => panic!("getxattr {name} on {}: {e}", p.display()),
        }
    }

    /// All xattrs of `p` (not followed), sorted by name.
    fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
        let mut buf = vec![0; 65536];
        let n = rfs::llistxattr(p, &mut buf[..]).unwrap();
        let mut all: Vec<_> = buf[..n]
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| {
                let name = String::from_utf8(n.to_vec()).unwrap();
                let value = get_xattr(p, &name).unwrap();
                (name, value)
            })
            .collect();
        all.sort();
        all
    }

    /// Reads a file without touching its atime.
    fn read(p: &Path) -> Vec<u8> {
        let fd = rfs::open(
            p,
            OFlags::RDONLY | OFlags::NOATIME | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let mut data = Vec::new();
        fs::File::from(fd).read_to_end(&mut data).unwrap();
        data
    }

    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect()
    }

    /// A POSIX ACL xattr value: (tag, perm, id) entries, sorted.
    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }
    const ACL_USER_OBJ: u16 = 0x01;
    const ACL_USER: u16 = 0x02;
    const ACL_GROUP_OBJ: u16 = 0x04;
    const ACL_MASK: u16 = 0x10;
    const ACL_OTHER: u16 = 0x20;
    const NO_ID: u32 = u32::MAX;

    /// The sorted entry names of a directory, read without touching its atime.
    fn list(p: &Path) -> Vec<PathBuf> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOATIME;
        let fd = rfs::open(p, flags, Mode::empty()).unwrap();
        let mut dir = rfs::Dir::new(fd).unwrap();
        let mut v = Vec::new();
        while let Some(e) = dir.read() {
            let name = e.unwrap().file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                v.push(PathBuf::from(OsStr::from_bytes(&name)));
            }
        }
        v.sort();
        v
    }

    /// Asserts that `dst` is an exact copy of `src` (recursively), sharing no
    /// inode with it.
    fn assert_same(src: &Path, dst: &Path) {
        let s = lstat(src);
        let d = lstat(dst);
        let what = src.display();
        assert_eq!(s.st_mode, d.st_mode, "mode of {what}");
        assert_eq!(
            (s.st_uid, s.st_gid),
            (d.st_uid, d.st_gid),
            "owner of {what}"
        );
        assert_eq!(mtime(&s), mtime(&d), "mtime of {what}");
        let ft = FileType::from_raw_mode(s.st_mode);
        if ft != FileType::Symlink {
            // readlink updates a symlink's atime: compared where it matters.
            assert_eq!(atime(&s), atime(&d), "atime of {what}");
        }
        assert_ne!(
            (s.st_dev, s.st_ino),
            (d.st_dev, d.st_ino),
            "{what} not copied"
        );
        assert_eq!(xattrs(src), xattrs(dst), "xattrs of {what}");
        match ft {
            FileType::Directory => {
                let entries = list(src);
                assert_eq!(entries, list(dst), "entries of {what}");
                for name in entries {
                    assert_same(&src.join(&name), &dst.join(&name));
                }
            }
            FileType::RegularFile => {
                assert_eq!(s.st_size, d.st_size, "size of {what}");
                assert!(read(src) == read(dst), "data of {what}");
            }
            FileType::Symlink => {
                assert_eq!(fs::read_link(src).unwrap(), fs::read_link(dst).unwrap());
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                assert_eq!(s.st_rdev, d.st_rdev, "rdev of {what}");
            }
            _ => {}
        }
    }

    /// Copies `f.src` with every variant; runs `check` on each copy (before
    /// the comparison with the source, which reads the copy and may update
    /// its atimes) and returns the statistics.
    fn copy_all(f: &Fixture, check: impl Fn(Options, &Path, &CopyStats)) -> Vec<CopyStats> {
        copy_all_after(f, || {}, check)
    }

    /// `copy_all`, running `before` before each copy.
    fn copy_all_after(
        f: &Fixture,
        before: impl Fn(),
        check: impl Fn(Options, &Path, &CopyStats),
    ) -> Vec<CopyStats> {
        VARIANTS
            .iter()
            .enumerate()
            .map(|(i, opts)| {
                before();
                let dst = f.dst(i);
                let stats = copy_tree_with(&f.src, &dst, *opts)
                    .unwrap_or_else(|e| panic!("copy with {opts:?}: {e}"));
                check(*opts, &dst, &stats);
                assert_same(&f.src, &dst);
                stats
            })
            .collect()
    }

    #[test]
    fn regular_and_empty_files() {
        let f = Fixture::new();
        let big = pattern(3 * 1024 * 1024 + 17, 1);
        let exact = pattern(256 * 1024, 2);
        fs::write(f.s("big"), &big).unwrap();
        fs::write(f.s("exact"), &exact).unwrap();
        fs::write(f.s("small"), b"hello").unwrap();
        fs::write(f.s("empty"), b"").unwrap();
        fs::create_dir_all(f.s("a/b/c")).unwrap();
        fs::write(f.s("a/b/c/deep"), b"deep").unwrap();
        let bytes = (big.len() + exact.len() + 5 + 4) as u64;
        copy_all(&f, |opts, dst, stats| {
            assert_eq!(read(&dst.join("big")), big);
            assert_eq!(read(&dst.join("exact")), exact);
            assert_eq!(read(&dst.join("small")), b"hello");
            assert_eq!(read(&dst.join("a/b/c/deep")), b"deep");
            assert_eq!(lstat(&dst.join("empty")).st_size, 0);
            assert_eq!(stats.files, 5, "{stats:?}");
            assert_eq!(stats.dirs, 4, "{stats:?}");
            assert_eq!(stats.bytes, bytes, "{stats:?}");
            assert_eq!(stats.hardlinks, 0);
            // The empty file needs no data copy.
            let methods = stats.reflinked + stats.copy_file_range + stats.read_write;
            assert_eq!(methods, 4, "{stats:?}");
            if !opts.reflink && !opts.copy_file_range {
                assert_eq!(stats.read_write, 4, "{stats:?}");
            }
            if !opts.reflink && opts.copy_file_range {
                assert_eq!(stats.reflinked, 0, "{stats:?}");
            }
        });
    }

    #[test]
    fn sparse_files_keep_holes() {
        let f = Fixture::new();
        let chunk = pattern(64 * 1024, 3);
        {
            use std::os::unix::fs::FileExt as _;
            // Data, hole, data, hole.
            let file = fs::File::create(f.s("sparse")).unwrap();
            file.write_all_at(&chunk, 0).unwrap();
            file.write_all_at(&chunk, 4 << 20).unwrap();
            file.set_len(16 << 20).unwrap();
            // Hole, data at the very end.
            let file = fs::File::create(f.s("tail")).unwrap();
            file.write_all_at(&chunk, (8 << 20) - chunk.len() as u64)
                .unwrap();
            // Only a hole.
            let file = fs::File::create(f.s("hole")).unwrap();
            file.set_len(8 << 20).unwrap();
        }
        let src_blocks = lstat(&f.s("sparse")).st_blocks;
        assert!(
            (src_blocks as u64) * 512 < 1 << 20,
            "fixture not sparse: {src_blocks}"
        );
        copy_all(&f, |_, dst, _| {
            for (name, size) in [("sparse", 16 << 20), ("tail", 8 << 20), ("hole", 8 << 20)] {
                let st = lstat(&dst.join(name));
                assert_eq!(st.st_size, size, "{name}");
                assert!(
                    (st.st_blocks as u64) * 512 <= 1 << 20,
                    "{name} lost its holes: {} blocks",
                    st.st_blocks
                );
            }
            let data = read(&dst.join("sparse"));
            assert_eq!(&data[..chunk.len()], &chunk[..]);
            assert_eq!(&data[4 << 20..(4 << 20) + chunk.len()], &chunk[..]);
            assert!(data[chunk.len()..4 << 20].iter().all(|&b| b == 0));
            assert!(data[(4 << 20) + chunk.len()..].iter().all(|&b| b == 0));
        });
    }

    #[test]
    fn hardlinks_preserved() {
        let f = Fixture::new();
        fs::create_dir(f.s("sub")).unwrap();
        fs::write(f.s("a"), b"linked").unwrap();
        fs::hard_link(f.s("a"), f.s("sub/b")).unwrap();
        fs::hard_link(f.s("a"), f.s("c")).unwrap();
        rfs::mknodat(
            CWD,
            f.s("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        fs::hard_link(f.s("fifo"), f.s("sub/fifo2")).unwrap();
        symlink("target", f.s("sl")).unwrap();
        // linkat without AT_SYMLINK_FOLLOW: a second name of the symlink.
        fs::hard_link(f.s("sl"), f.s("sub/sl2")).unwrap();
        // A second name outside the tree: not a link inside the copy.
        fs::write(f.s("lonely"), b"x").unwrap();
        fs::hard_link(f.s("lonely"), f.tmp.path().join("outside")).unwrap();
        let ino = |p: &Path| {
            let st = lstat(p);
            (st.st_ino, nlink(&st))
        };
        copy_all(&f, |_, dst, stats| {
            let (a, nlink) = ino(&dst.join("a"));
            assert_eq!(nlink, 3);
            assert_eq!(ino(&dst.join("sub/b")).0, a);
            assert_eq!(ino(&dst.join("c")).0, a);
            assert_ne!(a, lstat(&f.s("a")).st_ino);
            let (fifo, nlink) = ino(&dst.join("fifo"));
            assert_eq!(nlink, 2);
            assert_eq!(ino(&dst.join("sub/fifo2")).0, fifo);
            let (sl, nlink) = ino(&dst.join("sl"));
            assert_eq!(nlink, 2);
            assert_eq!(ino(&dst.join("sub/sl2")).0, sl);
            assert_eq!(ino(&dst.join("lonely")).1, 1);
            assert_eq!(stats.hardlinks, 4, "{stats:?}");
            assert_eq!(stats.files, 4, "{stats:?}");
        });
    }

    #[test]
    fn symlinks_not_followed() {
        let f = Fixture::new();
        let outside = f.tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"s").unwrap();
        fs::create_dir(f.s("sub")).unwrap();
        fs::write(f.s("sub/file"), b"f").unwrap();
        symlink("does/not/exist", f.s("dangling")).unwrap();
        symlink("/etc/passwd", f.s("abs")).unwrap();
        symlink(&outside, f.s("outdir")).unwrap();
        symlink("sub", f.s("dirlink")).unwrap();
        symlink("../outside", f.s("up")).unwrap();
        chown(&f.s("dirlink"), 1, 2);
        set_xattr(&f.s("dirlink"), "trusted.on-link", b"v");
        // Copying a symlink reads it, which may update its atime.
        let reset = || {
            set_times(
                &f.s("dirlink"),
                (1_000_000_000, 1),
                (1_100_000_000, 999_999_999),
            )
        };
        copy_all_after(&f, reset, |_, dst, _| {
            // Before reading the link, which may update its atime.
            let st = lstat(&dst.join("dirlink"));
            assert_eq!((st.st_uid, st.st_gid), (1, 2));
            assert_eq!(atime(&st), (1_000_000_000, 1));
            assert_eq!(mtime(&st), (1_100_000_000, 999_999_999));
            for (name, target) in [
                ("dangling", PathBuf::from("does/not/exist")),
                ("abs", PathBuf::from("/etc/passwd")),
                ("outdir", outside.clone()),
                ("dirlink", PathBuf::from("sub")),
                ("up", PathBuf::from("../outside")),
            ] {
                let p = dst.join(name);
                assert_eq!(
                    FileType::from_raw_mode(lstat(&p).st_mode),
                    FileType::Symlink,
                    "{name}"
                );
                assert_eq!(fs::read_link(&p).unwrap(), target, "{name}");
            }
            assert_eq!(
                get_xattr(&dst.join("dirlink"), "trusted.on-link"),
                Some(b"v".to_vec())
            );
            // Nothing from outside the tree was copied into it.
            assert_eq!(list(dst).len(), 6);
            assert_eq!(list(&outside).len(), 1);
        });
    }

    #[test]
    fn special_files() {
        let f = Fixture::new();
        let mk = |name: &str, ft: FileType, mode: u32, dev: u64| {
            let p = f.s(name);
            rfs::mknodat(CWD, &p, ft, Mode::from_raw_mode(mode), dev).unwrap();
            chmod(&p, mode);
            p
        };
        let fifo = mk("fifo", FileType::Fifo, 0o640, 0);
        chown(&fifo, 1, 2);
        set_xattr(&fifo, "trusted.fifo", b"\x00\x01");
        mk("null", FileType::CharacterDevice, 0o666, rfs::makedev(1, 3));
        mk("loop", FileType::BlockDevice, 0o660, rfs::makedev(7, 200));
        mk("sock", FileType::Socket, 0o755, 0);
        copy_all(&f, |_, dst, stats| {
            let st = lstat(&dst.join("fifo"));
            assert_eq!(st.st_mode, libc::S_IFIFO | 0o640);
            assert_eq!((st.st_uid, st.st_gid), (1, 2));
            assert_eq!(
                get_xattr(&dst.join("fifo"), "trusted.fifo"),
                Some(vec![0, 1])
            );
            let st = lstat(&dst.join("null"));
            assert_eq!(st.st_mode, libc::S_IFCHR | 0o666);
            assert_eq!((rfs::major(st.st_rdev), rfs::minor(st.st_rdev)), (1, 3));
            let st = lstat(&dst.join("loop"));
            assert_eq!(st.st_mode, libc::S_IFBLK | 0o660);
            assert_eq!((rfs::major(st.st_rdev), rfs::minor(st.st_rdev)), (7, 200));
            assert_eq!(lstat(&dst.join("sock")).st_mode, libc::S_IFSOCK | 0o755);
            assert_eq!(stats.files, 4);
        });
    }

    #[test]
    fn special_modes_and_owners() {
        let f = Fixture::new();
        let file = |name: &str, mode: u32, uid: u32, gid: u32| {
            let p = f.s(name);
            fs::write(&p, b"#!/bin/true\n").unwrap();
            // chown clears setuid: chmod after it.
            chown(&p, uid, gid);
            chmod(&p, mode);
        };
        let dir = |name: &str, mode: u32, uid: u32, gid: u32| {
            let p = f.s(name);
            fs::create_dir(&p).unwrap();
            chown(&p, uid, gid);
            chmod(&p, mode);
        };
        file("setuid", 0o4755, 1, 2);
        file("setgid", 0o2711, 3, 4);
        dir("sticky", 0o1705, 1, 2);
        file("sticky/inner", 0o644, 0, 0);
        dir("sgid", 0o2750, 0, 5);
        file("sgid/child", 0o600, 0, 0);
        dir("sgid/subdir", 0o755, 0, 0);
        dir("ro", 0o500, 0, 0);
        dir("ro/deeper", 0o000, 7, 8);
        file("ro/deeper/file", 0o000, 9, 10);
        copy_all(&f, |_, dst, _| {
            let check = |name: &str, mode: u32, uid: u32, gid: u32| {
                let st = lstat(&dst.join(name));
                assert_eq!(st.st_mode & 0o7777, mode, "mode of {name}");
                assert_eq!((st.st_uid, st.st_gid), (uid, gid), "owner of {name}");
            };
            check("setuid", 0o4755, 1, 2);
            check("setgid", 0o2711, 3, 4);
            check("sticky", 0o1705, 1, 2);
            check("sticky/inner", 0o644, 0, 0);
            check("sgid", 0o2750, 0, 5);
            // Not the setgid parent's group, and no inherited setgid bit.
            check("sgid/child", 0o600, 0, 0);
            check("sgid/subdir", 0o755, 0, 0);
            check("ro", 0o500, 0, 0);
            check("ro/deeper", 0o000, 7, 8);
            check("ro/deeper/file", 0o000, 9, 10);
        });
    }

    #[test]
    fn xattrs_preserved() {
        let f = Fixture::new();
        fs::write(f.s("file"), b"data").unwrap();
        set_xattr(&f.s("file"), "user.foo", b"bar");
        set_xattr(&f.s("file"), "trusted.bin", b"\x00\xff\x01cap\x00");
        fs::create_dir(f.s("dir")).unwrap();
        set_xattr(&f.s("dir"), "trusted.overlay.opaque", b"y");
        // A large value and a long list of names (beyond the first buffers).
        let big = pattern(3000, 4);
        set_xattr(&f.s("dir"), "user.big", &big);
        let names: Vec<String> = (0..30)
            .map(|i| format!("user.a_rather_long_attribute_name_{i:02}"))
            .collect();
        for name in &names {
            set_xattr(&f.s("file"), name, &name.as_bytes()[name.len() - 2..]);
        }
        // A file capability (v2) on a file whose owner the copy changes:
        // chown would drop it if it were set before.
        fs::write(f.s("ping"), b"\x7fELF").unwrap();
        chown(&f.s("ping"), 1, 2);
        chmod(&f.s("ping"), 0o755);
        let mut cap = 0x0200_0001u32.to_le_bytes().to_vec(); // rev 2, effective
        for word in [1u32 << 13, 0, 0, 0] {
            cap.extend_from_slice(&word.to_le_bytes()); // CAP_NET_RAW permitted
        }
        set_xattr(&f.s("ping"), "security.capability", &cap);
        let cap = get_xattr(&f.s("ping"), "security.capability").unwrap();
        // An access ACL (it also sets the group bits of the mode to the mask).
        fs::write(f.s("acl"), b"acl").unwrap();
        let access = acl(&[
            (ACL_USER_OBJ, 6, NO_ID),
            (ACL_USER, 6, 1000),
            (ACL_GROUP_OBJ, 4, NO_ID),
            (ACL_MASK, 6, NO_ID),
            (ACL_OTHER, 0, NO_ID),
        ]);
        set_xattr(&f.s("acl"), "system.posix_acl_access", &access);
        // A default ACL on a directory whose child predates it: the copy of
        // the child must not inherit it.
        fs::create_dir(f.s("inherit")).unwrap();
        fs::write(f.s("inherit/child"), b"c").unwrap();
        chmod(&f.s("inherit/child"), 0o600);
        fs::create_dir(f.s("inherit/subdir")).unwrap();
        chmod(&f.s("inherit/subdir"), 0o700);
        let default = acl(&[
            (ACL_USER_OBJ, 7, NO_ID),
            (ACL_USER, 7, 1000),
            (ACL_GROUP_OBJ, 5, NO_ID),
            (ACL_MASK, 7, NO_ID),
            (ACL_OTHER, 5, NO_ID),
        ]);
        set_xattr(&f.s("inherit"), "system.posix_acl_default", &default);
        symlink("file", f.s("link")).unwrap();
        set_xattr(&f.s("link"), "trusted.link", b"l");
        copy_all(&f, |_, dst, _| {
            let file = dst.join("file");
            assert_eq!(get_xattr(&file, "user.foo"), Some(b"bar".to_vec()));
            assert_eq!(
                get_xattr(&file, "trusted.bin"),
                Some(b"\x00\xff\x01cap\x00".to_vec())
            );
            for name in &names {
                let value = &name.as_bytes()[name.len() - 2..];
                assert_eq!(get_xattr(&file, name).as_deref(), Some(value));
            }
            let dir = dst.join("dir");
            assert_eq!(
                get_xattr(&dir, "trusted.overlay.opaque"),
                Some(b"y".to_vec())
            );
            assert_eq!(get_xattr(&dir, "user.big"), Some(big.clone()));
            let ping = lstat(&dst.join("ping"));
            assert_eq!(
                (ping.st_uid, ping.st_gid, ping.st_mode & 0o7777),
                (1, 2, 0o755)
            );
            assert_eq!(
                get_xattr(&dst.join("ping"), "security.capability"),
                Some(cap.clone())
            );
            assert_eq!(
                get_xattr(&dst.join("acl"), "system.posix_acl_access"),
                Some(access.clone())
            );
            assert_eq!(lstat(&dst.join("acl")).st_mode & 0o777, 0o660);
            assert_eq!(
                get_xattr(&dst.join("inherit"), "system.posix_acl_default"),
                Some(default.clone())
            );
            for (child, mode) in [("inherit/child", 0o600), ("inherit/subdir", 0o700)] {
                let p = dst.join(child);
                assert_eq!(xattrs(&p), vec![], "{child} inherited an ACL");
                assert_eq!(lstat(&p).st_mode & 0o7777, mode, "{child}");
            }
            assert_eq!(
                get_xattr(&dst.join("link"), "trusted.link"),
                Some(b"l".to_vec())
            );
        });
    }

    #[test]
    fn nanosecond_times() {
        let f = Fixture::new();
        fs::create_dir_all(f.s("dir/nested")).unwrap();
        fs::write(f.s("dir/nested/file"), b"x").unwrap();
        fs::write(f.s("file"), b"y").unwrap();
        symlink("file", f.s("link")).unwrap();
        rfs::mknodat(
            CWD,
            f.s("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let entries = [
            "dir/nested/file",
            "dir/nested",
            "dir",
            "file",
            "link",
            "fifo",
        ];
        let times = |i: i64| {
            (
                (1_000_000_000 + i, 123_456_789 + i),
                (1_200_000_000 + i, 987_654_321 - i),
            )
        };
        // Children first: setting their times does not touch the parents'.
        // Again before each copy, as copying a symlink may update its atime.
        let reset = || {
            for (i, name) in entries.iter().enumerate() {
                let (a, m) = times(i as i64);
                set_times(&f.s(name), a, m);
            }
            set_times(&f.src, (1_300_000_000, 5), (1_300_000_001, 6));
        };
        copy_all_after(&f, reset, |_, dst, _| {
            for (i, name) in entries.iter().enumerate() {
                let st = lstat(&dst.join(name));
                let (a, m) = times(i as i64);
                assert_eq!(mtime(&st), m, "mtime of {name}");
                assert_eq!(atime(&st), a, "atime of {name}");
            }
            let st = lstat(dst);
            assert_eq!(atime(&st), (1_300_000_000, 5));
            assert_eq!(mtime(&st), (1_300_000_001, 6));
        });
    }

    #[test]
    fn root_metadata_copied() {
        let f = Fixture::new();
        fs::write(f.s("child"), b"c").unwrap();
        fs::create_dir(f.s("subdir")).unwrap();
        chown(&f.src, 5, 6);
        chmod(&f.src, 0o1751);
        set_xattr(&f.src, "user.root", b"r");
        set_times(&f.src, (1_234_567_890, 111), (1_234_567_891, 222));
        // The destination's parent is setgid with a default ACL: the copy
        // must not inherit either.
        let parent = f.tmp.path().join("parent");
        fs::create_dir(&parent).unwrap();
        chown(&parent, 0, 77);
        chmod(&parent, 0o2775);
        let default = acl(&[
            (ACL_USER_OBJ, 7, NO_ID),
            (ACL_USER, 7, 1000),
            (ACL_GROUP_OBJ, 5, NO_ID),
            (ACL_MASK, 7, NO_ID),
            (ACL_OTHER, 5, NO_ID),
        ]);
        set_xattr(&parent, "system.posix_acl_default", &default);
        for (i, opts) in VARIANTS.iter().enumerate() {
            let dst = parent.join(format!("dst{i}"));
            copy_tree_with(&f.src, &dst, *opts).unwrap();
            let st = lstat(&dst);
            assert_eq!(st.st_mode & 0o7777, 0o1751);
            assert_eq!((st.st_uid, st.st_gid), (5, 6));
            assert_eq!(atime(&st), (1_234_567_890, 111));
            assert_eq!(mtime(&st), (1_234_567_891, 222));
            assert_eq!(xattrs(&dst), vec![("user.root".to_string(), b"r".to_vec())]);
            let child = lstat(&dst.join("child"));
            assert_eq!((child.st_uid, child.st_gid), (0, 0));
            assert_same(&f.src, &dst);
        }
        let stats = copy_tree(&f.src, &parent.join("plain")).unwrap();
        assert_eq!((stats.files, stats.dirs), (1, 2));
    }

    #[test]
    fn destination_inside_source_is_skipped() {
        let f = Fixture::new();
        fs::write(f.s("a"), b"a").unwrap();
        let dst = f.s("copy");
        let stats = copy_tree(&f.src, &dst).unwrap();
        assert_eq!(read(&dst.join("a")), b"a");
        assert!(fs::symlink_metadata(dst.join("copy")).is_err());
        assert_eq!((stats.files, stats.dirs), (1, 1));
    }

    #[test]
    fn errors_name_the_path() {
        let f = Fixture::new();
        let dst = f.dst(0);
        fs::create_dir(&dst).unwrap();
        let e = copy_tree(&f.src, &dst).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains(&*dst.to_string_lossy()), "{e}");

        let missing = f.tmp.path().join("missing/dst");
        let e = copy_tree(&f.src, &missing).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("missing"), "{e}");

        // The source root is not followed if it is a symlink.
        let link = f.tmp.path().join("srclink");
        symlink(&f.src, &link).unwrap();
        assert!(copy_tree(&link, &f.dst(1)).is_err());
        assert!(copy_tree(&f.tmp.path().join("nope"), &f.dst(2)).is_err());
    }

    #[test]
    fn worker_errors_name_the_file() {
        let f = Fixture::new();
        fs::write(f.s("data"), b"data").unwrap();
        fs::write(f.s("readonly"), b"").unwrap();
        let shared = Shared {
            methods: Methods::default(),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let rx = Mutex::new(rx);
        let src = rfs::open(f.s("data"), OFlags::RDONLY, Mode::empty()).unwrap();
        // Not writable: the data copy fails.
        let dst = rfs::open(f.s("readonly"), OFlags::RDONLY, Mode::empty()).unwrap();
        let st = rfs::fstat(&src).unwrap();
        tx.send(Job {
            src,
            dst,
            st,
            owner_ok: true,
        })
        .unwrap();
        drop(tx);
        let stats = worker(&rx, &shared);
        assert_eq!(stats.files, 0);
        assert!(shared.failed.load(Ordering::Relaxed));
        let e = shared.error.lock().unwrap().take().unwrap();
        assert_eq!(e.raw_os_error(), None);
        let msg = e.to_string();
        assert!(msg.contains(&*f.s("readonly").to_string_lossy()), "{msg}");
    }

    #[test]
    fn everything_together() {
        let f = Fixture::new();
        for i in 0..20 {
            let d = f.s(&format!("d{}/e{}", i % 4, i % 3));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join(format!("f{i}")), pattern(i * 1000, i as u64)).unwrap();
            symlink(format!("f{i}"), d.join(format!("l{i}"))).unwrap();
            chown(&d.join(format!("f{i}")), i as u32, 100 + i as u32);
            set_times(&d.join(format!("f{i}")), (i as i64, 1), (i as i64 * 7, 999));
        }
        fs::hard_link(f.s("d1/e1/f1"), f.s("d2/hard")).unwrap();
        set_times(&f.s("d1"), (5, 5), (6, 6));
        let results = copy_all(&f, |_, _, _| {});
        let first = results[0];
        for stats in &results {
            assert_eq!(
                (stats.files, stats.dirs, stats.bytes, stats.hardlinks),
                (first.files, first.dirs, first.bytes, first.hardlinks)
            );
        }
        assert_eq!(first.files, 40);
        assert_eq!(first.hardlinks, 1);
    }
}
