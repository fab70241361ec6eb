//! Export: a tree, or a list of changes over a tree, as a deterministic OCI layer tar.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};

use super::entry_name::WHITEOUT_PREFIX;
use super::prefetch::{self, Plan, Prefetch};
use super::writer::{Header, Kind, TarWriter};
use crate::chunks::{self, ChunkReader};
use crate::dir_cursor::DirCursor;
use crate::tree::{self, fd_xattrs, is_private_xattr, open_dir, path_xattrs, proc_path};
use crate::{Change, ChangeKind, DriverError, IoContext, Result};

/// Writes the whole tree at `root` (its root directory first, as `./`) to `out`.
pub fn export_tree(root: &Path, out: impl Write) -> Result<()> {
    let fd = open_dir(root)?;
    let mut ex = Exporter::new(out, Some(Prefetch::tree(fd.as_fd())));
    let st = rfs::fstat(&fd).ctx("stat", root)?;
    ex.entry(fd.as_fd(), None, b"./", &st, root)?;
    ex.walk(fd.as_fd(), root)?;
    ex.finish(root)
}

/// Writes the entries named by `changes` (paths under `root`) to `out`: added and modified
/// paths as themselves, deleted ones as `.wh.` whiteouts.
pub fn export_changes(root: &Path, changes: &[Change], out: impl Write) -> Result<()> {
    let mut sorted: Vec<&Change> = changes.iter().collect();
    sorted.sort_by(|a, b| a.path.components().cmp(b.path.components()));
    let root_fd = open_dir(root)?;
    // consecutive changes share directories: moving between them is cheap, and opens
    // nothing by a long path
    let mut cursor = DirCursor::new(root_fd.as_fd()).ctx("open directory", root)?;
    let plan = plan(&sorted);
    // one entry gains nothing from a second thread
    let entries: usize = plan.iter().map(|(_, names)| names.len()).sum();
    let ahead = (entries > 1).then(|| Prefetch::changes(root_fd.as_fd(), plan));
    let mut ex = Exporter::new(out, ahead);
    for c in sorted {
        let rel = c.path.strip_prefix("/").unwrap_or(&c.path);
        let (parent, base) = match (rel.parent(), rel.file_name()) {
            (Some(p), Some(b)) => (p, b),
            _ => continue, // the root itself is never a change
        };
        let display = root.join(rel);
        if c.kind == ChangeKind::Deleted {
            let mut name = parent.as_os_str().as_bytes().to_vec();
            if !name.is_empty() {
                name.push(b'/');
            }
            name.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
            name.extend_from_slice(base.as_bytes());
            ex.whiteout(name).ctx("write archive entry for", &display)?;
            continue;
        }
        let names: Vec<&[u8]> = parent
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n.as_bytes()),
                _ => None,
            })
            .collect();
        cursor
            .go_to(&names)
            .ctx("open directory", root.join(parent))?;
        let dir = cursor.dir();
        let cbase = CString::new(base.as_bytes())
            .map_err(|_| DriverError::archive(display.display().to_string(), "NUL in name"))?;
        let st = rfs::statat(dir, &cbase, AtFlags::SYMLINK_NOFOLLOW).ctx("stat", &display)?;
        let mut name = rel.as_os_str().as_bytes().to_vec();
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            name.push(b'/');
        }
        ex.entry(dir, Some(&cbase), &name, &st, &display)?;
        ex.archived(&st);
    }
    ex.finish(root)
}

/// The directories that `sorted` (changes in archive order) archives entries of, in the
/// order the export reaches them, with the entries of each: what the read-ahead reads.
fn plan(sorted: &[&Change]) -> Plan {
    let mut plan: Plan = Vec::new();
    let mut index: HashMap<&Path, usize> = HashMap::new();
    for c in sorted.iter().filter(|c| c.kind != ChangeKind::Deleted) {
        let rel = c.path.strip_prefix("/").unwrap_or(&c.path);
        let (Some(parent), Some(base)) = (rel.parent(), rel.file_name()) else {
            continue;
        };
        let Ok(base) = CString::new(base.as_bytes()) else {
            continue;
        };
        let i = *index.entry(parent).or_insert_with(|| {
            let names = parent
                .iter()
                .filter_map(|n| CString::new(n.as_bytes()).ok())
                .collect();
            plan.push((names, Vec::new()));
            plan.len() - 1
        });
        plan[i].1.push(base);
    }
    plan
}

struct Exporter<W: Write> {
    tar: TarWriter<BufWriter<W>>,
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
    /// The read-ahead, told of each entry archived; stopped when the export ends.
    ahead: Option<Prefetch>,
}

impl<W: Write> Exporter<W> {
    fn new(out: W, ahead: Option<Prefetch>) -> Self {
        Exporter {
            tar: TarWriter::new(BufWriter::with_capacity(1 << 20, out)),
            links: HashMap::new(),
            buf: Vec::new(),
            ahead,
        }
    }

    /// Tells the read-ahead that the entry `st` is archived.
    fn archived(&self, st: &Stat) {
        if let Some(a) = &self.ahead {
            a.advance(prefetch::cost(st));
        }
    }

    fn finish(self, root: &Path) -> Result<()> {
        self.tar.finish().ctx("write archive of", root)?;
        Ok(())
    }

    /// Archives everything below `root`, sorted, depth first, without recursion and with
    /// one directory open whatever the depth.
    fn walk(&mut self, root: BorrowedFd<'_>, root_path: &Path) -> Result<()> {
        let mut cursor = DirCursor::new(root).ctx("open directory", root_path)?;
        let mut display = root_path.to_path_buf();
        // the archive name of the current directory, "" or ending in '/'
        let mut prefix: Vec<u8> = Vec::new();
        let sorted = |dir: BorrowedFd<'_>, path: &Path| -> Result<Vec<CString>> {
            let mut names = tree::list_dir(dir).ctx("read directory", path)?;
            names.sort_by(|a, b| b.cmp(a)); // popped from the end: ascending
            Ok(names)
        };
        let mut pending = vec![sorted(root, root_path)?];
        while let Some(level) = pending.last_mut() {
            let Some(name) = level.pop() else {
                pending.pop();
                if pending.is_empty() {
                    break;
                }
                cursor.up().ctx("return to the parent of", &display)?;
                display.pop();
                let cut = prefix[..prefix.len().saturating_sub(1)]
                    .iter()
                    .rposition(|&b| b == b'/')
                    .map_or(0, |i| i + 1);
                prefix.truncate(cut);
                continue;
            };
            let path = display.join(OsStr::from_bytes(name.to_bytes()));
            let st =
                rfs::statat(cursor.dir(), &name, AtFlags::SYMLINK_NOFOLLOW).ctx("stat", &path)?;
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            let mut arc_name = prefix.clone();
            arc_name.extend_from_slice(name.to_bytes());
            if is_dir {
                arc_name.push(b'/');
                cursor.down(&name).ctx("open directory", &path)?;
                self.entry_of_dir(cursor.dir(), &arc_name, &st, &path)?;
                self.archived(&st);
                pending.push(sorted(cursor.dir(), &path)?);
                display = path;
                prefix = arc_name;
            } else {
                self.entry(cursor.dir(), Some(&name), &arc_name, &st, &path)?;
                self.archived(&st);
            }
        }
        Ok(())
    }

    fn entry_of_dir(
        &mut self,
        fd: BorrowedFd<'_>,
        name: &[u8],
        st: &Stat,
        path: &Path,
    ) -> Result<()> {
        self.entry(fd, None, name, st, path)
    }

    /// Archives one entry: `base` inside `dir`, or `dir` itself when `base` is `None`.
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        base: Option<&CStr>,
        name: &[u8],
        st: &Stat,
        path: &Path,
    ) -> Result<()> {
        let ft = FileType::from_raw_mode(st.st_mode);
        let mut h = Header {
            name: name.to_vec(),
            kind: Kind::Regular,
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            size: 0,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as u32,
            link: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
        };
        let mut file: Option<File> = None;
        match ft {
            FileType::RegularFile => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&key) {
                        h.kind = Kind::Hardlink;
                        h.link = first.clone();
                        return self
                            .tar
                            .append(&h, None)
                            .ctx("write archive entry for", path);
                    }
                    self.links.insert(key, name.to_vec());
                }
                let fd = match base {
                    Some(b) => rfs::openat(
                        dir,
                        b,
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    ),
                    None => rfs::openat(dir, c".", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()),
                }
                .ctx("open", path)?;
                h.size = st.st_size as u64;
                h.xattrs = fd_xattrs(fd.as_fd()).ctx("read xattrs of", path)?;
                file = Some(File::from(fd));
            }
            FileType::Directory => {
                h.kind = Kind::Directory;
                h.xattrs = match base {
                    None => fd_xattrs(dir),
                    Some(b) => {
                        let fd = tree::open_dir_at(dir, b).ctx("open directory", path)?;
                        fd_xattrs(fd.as_fd())
                    }
                }
                .ctx("read xattrs of", path)?;
            }
            FileType::Symlink
            | FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Fifo => {
                let b = base.ok_or_else(|| {
                    DriverError::archive(path.display().to_string(), "root is not a directory")
                })?;
                h.kind = match ft {
                    FileType::Symlink => Kind::Symlink,
                    FileType::CharacterDevice => Kind::Char,
                    FileType::BlockDevice => Kind::Block,
                    _ => Kind::Fifo,
                };
                if ft == FileType::Symlink {
                    h.link = rfs::readlinkat(dir, b, std::mem::take(&mut self.buf))
                        .ctx("read link", path)?
                        .into_bytes();
                }
                if matches!(ft, FileType::CharacterDevice | FileType::BlockDevice) {
                    h.dev = (rfs::major(st.st_rdev), rfs::minor(st.st_rdev));
                }
                h.xattrs = path_xattrs(&proc_path(dir, b)).ctx("read xattrs of", path)?;
            }
            // Sockets are not part of a layer.
            _ => return Ok(()),
        }
        h.xattrs.retain(|(k, _)| !is_private_xattr(k));
        // A failed read of the file (a disk error) is named apart from a failed write of the
        // archive (the reader went away).
        let mut source = file.map(|f| ReadErrors {
            inner: f,
            failed: false,
        });
        let data = source.as_mut().map(|f| f as &mut dyn Read);
        let r = self.tar.append(&h, data);
        let op = match source {
            Some(ReadErrors { failed: true, .. }) => "read",
            _ => "write archive entry for",
        };
        r.ctx(op, path)
    }

    fn whiteout(&mut self, name: Vec<u8>) -> io::Result<()> {
        let h = Header {
            name,
            kind: Kind::Regular,
            mode: 0o600,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
            link: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
        };
        self.tar.append(&h, Some(&mut io::empty()))
    }
}

/// A reader that remembers whether a read failed.
struct ReadErrors<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for ReadErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        self.failed |= r.is_err();
        r
    }
}

/// How many chunks of archive (each one flush of the export's 1 MiB buffer) may wait for the
/// reader.
const CHUNKS_IN_FLIGHT: usize = 2;

/// A layer archive produced by a thread while it is read; keeps `hold` (the mounted layers)
/// alive until it is dropped.
///
/// The archive comes in chunks over a channel ([`crate::chunks`]) rather than through a
/// pipe, which cost a warm export about half of its time.
pub struct DiffReader<'a> {
    chunks: Option<ChunkReader>,
    thread: Option<JoinHandle<Result<()>>>,
    hold: Option<Box<dyn Send + 'a>>,
}

impl std::fmt::Debug for DiffReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffReader").finish_non_exhaustive()
    }
}

/// Exports `root` (whole, or only `changes`) on a thread, returning the reading end.
pub fn export_in_background<'a>(
    root: PathBuf,
    changes: Option<Vec<Change>>,
    hold: Box<dyn Send + 'a>,
) -> Result<DiffReader<'a>> {
    let (writer, chunks) = chunks::channel(CHUNKS_IN_FLIGHT);
    let thread = std::thread::Builder::new()
        .name("graphdriver-export".into())
        .spawn(move || match changes {
            Some(c) => export_changes(&root, &c, writer),
            None => export_tree(&root, writer),
        })
        .ctx("spawn export thread for", PathBuf::new())?;
    Ok(DiffReader {
        chunks: Some(chunks),
        thread: Some(thread),
        hold: Some(hold),
    })
}

impl DiffReader<'_> {
    fn join(&mut self) -> io::Result<()> {
        match self.thread.take().map(|t| t.join()) {
            None | Some(Ok(Ok(()))) => Ok(()),
            // the kind of the I/O error under the driver's, so a caller can match on it
            Some(Ok(Err(e))) => Err(io::Error::new(
                match &e {
                    DriverError::Io { source, .. } => source.kind(),
                    _ => io::ErrorKind::Other,
                },
                e,
            )),
            Some(Err(_)) => Err(io::Error::other("export thread panicked")),
        }
    }
}

impl Read for DiffReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(chunks) = self.chunks.as_mut() else {
            return Ok(0);
        };
        let n = chunks.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.chunks = None;
            // the thread has ended: the archive is whole, or its error is the reader's
            self.join()?;
        }
        Ok(n)
    }
}

impl Drop for DiffReader<'_> {
    fn drop(&mut self) {
        self.chunks = None; // the thread sees a broken pipe if it is still writing
        let _ = self.join();
        self.hold = None;
    }
}
