//! Phase one of an apply: extract the archive into a private staging tree.
//!
//! Nothing here touches the target layer (except to find hardlink targets in it): entries
//! land in `<staging>/tree`, whiteouts and opaque markers are recorded in a [`Manifest`], and
//! any error leaves the layer exactly as it was. Paths are resolved one component at a time
//! with `O_NOFOLLOW`, so a symlink in the archive can never redirect a later entry.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::entry_name::{components, marker, Marker};
use super::header::{Header, Kind};
use super::manifest::Manifest;
use super::merged_view::{self, Found, Reach};
use super::reader::{ReadError, TarReader};

use crate::dir_cursor::DirCursor;
use crate::tree::{self, is_private_xattr, open_dir, proc_path};
use crate::{DriverError, IoContext, Result};

/// Extracts `tar` into `tree` (an empty directory). `bases` are the layer's current content
/// and then the layers below it (closest first), where hardlinks may find targets the
/// archive itself does not carry; `opaque` marks an opaque directory of those layers.
pub(crate) fn stage(
    tar: &mut dyn Read,
    tree: &Path,
    bases: &[PathBuf],
    opaque: &'static CStr,
) -> Result<(Manifest, u64)> {
    let root = open_dir(tree)?;
    let cursor = DirCursor::new(root.as_fd()).ctx("open directory", tree)?;
    let bases = bases
        .iter()
        .map(|b| open_dir(b))
        .collect::<Result<Vec<_>>>()?;
    let mut st = Stager {
        opaque,
        root,
        bases,
        cursor,
        dir_times: Vec::new(),
        manifest: Manifest::default(),
        implicit: HashSet::new(),
        size: 0,
        buf: vec![0u8; 256 * 1024],
    };
    let mut reader = TarReader::new(io::BufReader::with_capacity(1 << 20, tar));
    let mut last = String::new();
    loop {
        let entry = match reader.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => {
                return Err(read_error(e).into_driver_error(&last));
            }
        };
        last = String::from_utf8_lossy(&entry.name).into_owned();
        st.entry(&entry, &mut reader)
            .map_err(|e| e.into_driver_error(&last))?;
    }
    st.finish()
        .map_err(|e| e.into_driver_error("<directory times>"))?;
    let mut manifest = st.manifest;
    manifest.implicit = st.implicit.into_iter().collect();
    manifest.implicit.sort();
    Ok((manifest, st.size))
}

/// Why one entry failed: its fault, or the system's.
enum EntryError {
    Invalid(String),
    Io(&'static str, io::Error),
}

impl EntryError {
    fn into_driver_error(self, entry: &str) -> DriverError {
        match self {
            EntryError::Invalid(reason) => DriverError::archive(entry, reason),
            EntryError::Io(op, e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                DriverError::archive(entry, format!("archive is truncated ({op})"))
            }
            EntryError::Io(op, e) => DriverError::Io {
                op,
                path: Path::new(entry).to_owned(),
                source: e,
            },
        }
    }
}

type EntryResult<T> = std::result::Result<T, EntryError>;

fn invalid<T>(reason: impl Into<String>) -> EntryResult<T> {
    Err(EntryError::Invalid(reason.into()))
}

trait Op<T> {
    fn op(self, op: &'static str) -> EntryResult<T>;
}

impl<T, E: Into<io::Error>> Op<T> for std::result::Result<T, E> {
    fn op(self, op: &'static str) -> EntryResult<T> {
        self.map_err(|e| EntryError::Io(op, e.into()))
    }
}

/// Metadata an entry carries in its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

struct Stager {
    /// The xattr that marks an opaque directory of the layers below.
    opaque: &'static CStr,
    root: OwnedFd,
    bases: Vec<OwnedFd>,
    /// The last parent directory resolved: consecutive entries share most of their path,
    /// so moving from one to the next is cheap and opens nothing by a long path.
    cursor: DirCursor,
    dir_times: Vec<(Vec<u8>, Timespec)>,
    manifest: Manifest,
    implicit: HashSet<Vec<u8>>,
    size: u64,
    buf: Vec<u8>,
}

impl Stager {
    fn entry<R: Read>(&mut self, entry: &Header, reader: &mut TarReader<R>) -> EntryResult<()> {
        // NUL ends a name for the kernel: refused everywhere, whiteouts and links included
        if entry.name.contains(&0) {
            return invalid("NUL in name");
        }
        if entry.link.contains(&0) {
            return invalid("NUL in link target");
        }
        let comps = components(&entry.name).or_else(invalid)?;
        // Staging directories may lie inside the layer (and be reached through a symlink of
        // a lower layer): their name is reserved at every depth.
        if comps.iter().any(|c| is_reserved(c)) {
            return invalid("the name is reserved for staging archives");
        }
        let kind = entry.kind;
        let meta = meta(entry)?;
        let Some((base, parents)) = comps.split_last() else {
            // "./": the layer root itself
            if kind != Kind::Directory {
                return invalid("the layer root can only be a directory");
            }
            self.manifest.root_explicit = true;
            let root = self.root.try_clone().op("duplicate fd")?;
            return self.dir_meta(root.as_fd(), &meta, Vec::new());
        };
        let parent_path = parents.join(&b'/');
        match marker(base).or_else(invalid)? {
            Marker::AufsMeta => return Ok(()),
            // An opaque layer root hides nothing: overlayfs ignores opaque on its upper root,
            // and every backend must give an image the same tree.
            Marker::Opaque if parents.is_empty() => return Ok(()),
            Marker::Whiteout(name) if is_reserved(name) => {
                return invalid("whiteout of a name reserved for staging archives")
            }
            Marker::Opaque => {
                self.parent(parents)?;
                self.manifest.opaque.push(parent_path);
                return Ok(());
            }
            Marker::Whiteout(name) => {
                self.parent(parents)?;
                let mut p = parent_path.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                self.manifest.whiteouts.push(p);
                return Ok(());
            }
            Marker::Entry => {}
        }
        let dir = self.parent(parents)?;
        let dir = dir.as_fd();
        let name = CString::new(base.to_vec()).or_else(|_| invalid("NUL in name"))?;
        let full = comps.join(&b'/');
        match kind {
            Kind::Directory => {
                match tree::open_dir_at(dir, &name) {
                    Ok(fd) => {
                        self.implicit.remove(&full);
                        return self.dir_meta(fd.as_fd(), &meta, full);
                    }
                    Err(Errno::NOENT) => {}
                    Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                        rfs::unlinkat(dir, &name, AtFlags::empty()).op("replace")?
                    }
                    Err(e) => return Err(e).op("open directory"),
                }
                rfs::mkdirat(dir, &name, Mode::from_raw_mode(0o700)).op("create directory")?;
                let fd = tree::open_dir_at(dir, &name).op("open directory")?;
                self.dir_meta(fd.as_fd(), &meta, full)
            }
            Kind::Regular => {
                self.clear(dir, &name, &full)?;
                let fd = rfs::openat(
                    dir,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .op("create file")?;
                let mut file = File::from(fd);
                loop {
                    let n = reader.read_data(&mut self.buf).map_err(read_error)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n]).op("write file")?;
                    self.size += n as u64;
                }
                let fd = file.as_fd();
                rfs::fchown(fd, Some(uid(meta.uid)), Some(gid(meta.gid))).op("change owner")?;
                rfs::fchmod(fd, Mode::from_raw_mode(meta.mode)).op("change mode")?;
                for (k, v) in &meta.xattrs {
                    rfs::fsetxattr(fd, k, v, rfs::XattrFlags::empty()).op("set xattr")?;
                }
                rfs::futimens(fd, &times(meta.mtime)).op("set times")
            }
            Kind::Hardlink => {
                self.clear(dir, &name, &full)?;
                self.hardlink(&entry.link, dir, &name)
            }
            Kind::Symlink => {
                let target = &entry.link;
                if target.is_empty() {
                    return invalid("symlink without a target");
                }
                self.clear(dir, &name, &full)?;
                rfs::symlinkat(OsStr::from_bytes(target), dir, &name).op("create symlink")?;
                self.node_meta(dir, &name, &meta, false)
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                self.clear(dir, &name, &full)?;
                let (major, minor) = entry.dev;
                let (ft, dev) = match kind {
                    Kind::Char => (FileType::CharacterDevice, rfs::makedev(major, minor)),
                    Kind::Block => (FileType::BlockDevice, rfs::makedev(major, minor)),
                    _ => (FileType::Fifo, 0),
                };
                rfs::mknodat(dir, &name, ft, Mode::from_raw_mode(0o600), dev).op("create node")?;
                self.node_meta(dir, &name, &meta, true)
            }
            Kind::Other(flag) => invalid(format!("unsupported entry type {:?}", flag as char)),
        }
    }

    /// Resolves (creating implicitly) the parent directory of an entry inside the staging tree.
    fn parent(&mut self, comps: &[&[u8]]) -> EntryResult<OwnedFd> {
        let mut common = self
            .cursor
            .names()
            .iter()
            .zip(comps)
            .take_while(|(a, b)| a.as_bytes() == **b)
            .count();
        while self.cursor.depth() > common {
            if self.cursor.up().is_err() {
                // the way back was replaced by a later entry: start again from the root
                self.cursor = DirCursor::new(self.root.as_fd()).op("open directory")?;
                common = 0;
            }
        }
        for (k, c) in comps.iter().enumerate().skip(common) {
            let name = CString::new(c.to_vec()).or_else(|_| invalid("NUL in name"))?;
            match self.cursor.down(&name) {
                Ok(()) => {}
                Err(Errno::NOENT) => {
                    rfs::mkdirat(self.cursor.dir(), &name, Mode::from_raw_mode(0o755))
                        .op("create directory")?;
                    self.implicit.insert(comps[..=k].join(&b'/'));
                    self.cursor.down(&name).op("open directory")?;
                }
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    return invalid(format!(
                        "parent {} is not a directory in this archive (a symlink cannot redirect an entry)",
                        String::from_utf8_lossy(&comps[..=k].join(&b'/'))
                    ))
                }
                Err(e) => return Err(e).op("open directory"),
            }
        }
        self.cursor.dir().try_clone_to_owned().op("duplicate fd")
    }

    /// Removes an earlier entry of the same name (a later entry wins, as in tar).
    fn clear(&mut self, dir: BorrowedFd<'_>, name: &CStr, full: &[u8]) -> EntryResult<()> {
        match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e).op("stat"),
            Ok(_) => {
                // A replaced directory takes the cursor's way back with it.
                let at = self
                    .cursor
                    .names()
                    .iter()
                    .map(|n| n.as_bytes())
                    .collect::<Vec<_>>()
                    .join(&b'/');
                if at.starts_with(full) {
                    self.cursor = DirCursor::new(self.root.as_fd()).op("open directory")?;
                }
                tree::remove_entry_at(dir, name).op("replace")
            }
        }
    }

    fn hardlink(&mut self, target: &[u8], dir: BorrowedFd<'_>, name: &CStr) -> EntryResult<()> {
        let comps = components(target).or_else(|r| invalid(format!("hard link target: {r}")))?;
        if comps.iter().any(|c| is_reserved(c)) {
            return invalid("hard link target is reserved for staging archives");
        }
        let Some((tbase, tparents)) = comps.split_last() else {
            return invalid("hard link to the layer root");
        };
        let tname = CString::new(tbase.to_vec()).or_else(|_| invalid("NUL in name"))?;
        let tparent = tparents.join(&b'/');
        let display = String::from_utf8_lossy(target).into_owned();
        // In this archive first, walking without following symlinks.
        let mut cur = Some(self.root.try_clone().op("duplicate fd")?);
        for c in tparents {
            let n = CString::new(c.to_vec()).or_else(|_| invalid("NUL in name"))?;
            cur = cur.and_then(|fd| tree::open_dir_at(fd.as_fd(), &n).ok());
        }
        if let Some(fd) = &cur {
            match rfs::linkat(fd, &tname, dir, name, AtFlags::empty()) {
                Ok(()) => return Ok(()),
                Err(Errno::NOENT) => {}
                Err(Errno::PERM) => return invalid(format!("hard link to {display}, a directory")),
                Err(e) => return Err(e).op("create hard link"),
            }
        }
        // Then in the view of the layer's existing content over the layers below it, as the
        // container sees it (whiteouts and opaque directories on the way count), following
        // symlinks inside the root. Files of lower layers are copied, never linked: writing
        // the layer must not change them.
        let layers: Vec<BorrowedFd<'_>> = self.bases.iter().map(|b| b.as_fd()).collect();
        let overlay = (layers.len() > 1).then_some(self.opaque);
        let found = match merged_view::walk(&layers, &tparent, overlay, Reach::Look, &|_, _| Ok(()))
            .op("open hard link target")?
        {
            Some(level) => {
                merged_view::step(&level, &tname, overlay).op("stat hard link target")?
            }
            None => Found::Missing,
        };
        let (layer, pfd) = match found {
            Found::Dir(_) => return invalid(format!("hard link to {display}, a directory")),
            Found::Symlink { layer, dir, .. } | Found::Entry { layer, dir } => (layer, dir),
            Found::Missing | Found::Whiteout => {
                return invalid(format!("hard link target {display} does not exist"))
            }
        };
        if layer == 0 {
            match rfs::linkat(&pfd, &tname, dir, name, AtFlags::empty()) {
                Ok(()) => return Ok(()),
                Err(Errno::XDEV) => {}
                Err(e) => return Err(e).op("create hard link"),
            }
        }
        tree::copy_entry_at(pfd.as_fd(), &tname, dir, name).op("copy hard link target")
    }

    fn dir_meta(&mut self, fd: BorrowedFd<'_>, meta: &Meta, path: Vec<u8>) -> EntryResult<()> {
        rfs::fchown(fd, Some(uid(meta.uid)), Some(gid(meta.gid))).op("change owner")?;
        rfs::fchmod(fd, Mode::from_raw_mode(meta.mode)).op("change mode")?;
        for (k, v) in &meta.xattrs {
            rfs::fsetxattr(fd, k, v, rfs::XattrFlags::empty()).op("set xattr")?;
        }
        self.dir_times.push((path, meta.mtime));
        Ok(())
    }

    fn node_meta(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        meta: &Meta,
        chmod: bool,
    ) -> EntryResult<()> {
        rfs::chownat(
            dir,
            name,
            Some(uid(meta.uid)),
            Some(gid(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .op("change owner")?;
        if chmod {
            rfs::chmodat(dir, name, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .op("change mode")?;
        }
        if !meta.xattrs.is_empty() {
            let p = proc_path(dir, name);
            for (k, v) in &meta.xattrs {
                match rfs::lsetxattr(&p, k, v, rfs::XattrFlags::empty()) {
                    // user.* cannot exist on symlinks and devices: the kernel refuses them
                    Err(Errno::PERM) if k.to_bytes().starts_with(b"user.") => {}
                    r => r.op("set xattr")?,
                }
            }
        }
        rfs::utimensat(dir, name, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW).op("set times")
    }

    /// Sets directory times last, deepest first, since creating entries changes them.
    fn finish(&mut self) -> EntryResult<()> {
        let mut seen = HashSet::new();
        let mut cursor = DirCursor::new(self.root.as_fd()).op("open directory")?;
        for (path, mtime) in self.dir_times.iter().rev() {
            if !seen.insert(path.clone()) {
                continue;
            }
            let names: Vec<&[u8]> = path
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .collect();
            match cursor.go_to(&names) {
                Ok(()) => {}
                // a later entry replaced the directory: its time went with it
                Err(Errno::NOTDIR) | Err(Errno::NOENT) | Err(Errno::LOOP) => continue,
                Err(e) => return Err(e).op("open directory"),
            }
            rfs::futimens(cursor.dir(), &times(*mtime)).op("set times")?;
        }
        Ok(())
    }
}

fn meta(entry: &Header) -> EntryResult<Meta> {
    // u32::MAX is (uid_t)-1, "no change" to chown: not an owner
    let id = |v: u64, what: &str| match u32::try_from(v) {
        Ok(v) if v != u32::MAX => Ok(v),
        _ => invalid(format!("{what} {v} is out of range")),
    };
    let mut xattrs = Vec::with_capacity(entry.xattrs.len());
    for (k, v) in &entry.xattrs {
        if !is_private_xattr(k) {
            let name = CString::new(k.clone()).or_else(|_| invalid("NUL in xattr name"))?;
            xattrs.push((name, v.clone()));
        }
    }
    Ok(Meta {
        mode: entry.mode,
        uid: id(entry.uid, "uid")?,
        gid: id(entry.gid, "gid")?,
        mtime: Timespec {
            tv_sec: entry.mtime,
            tv_nsec: entry.mtime_nsec.into(),
        },
        xattrs,
    })
}

/// Whether a name component is reserved for staging directories.
fn is_reserved(name: &[u8]) -> bool {
    name.starts_with(super::STAGING_PREFIX.as_bytes())
}

fn read_error(e: ReadError) -> EntryError {
    match e {
        ReadError::Truncated => EntryError::Invalid("archive is truncated".into()),
        ReadError::Malformed(m) => EntryError::Invalid(m),
        ReadError::Io(e) => EntryError::Io("read archive", e),
    }
}

fn times(mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: mtime,
    }
}

fn uid(u: u32) -> rfs::Uid {
    rfs::Uid::from_raw(u)
}

fn gid(g: u32) -> rfs::Gid {
    rfs::Gid::from_raw(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uid: u64, gid: u64) -> Header {
        Header {
            name: b"f".to_vec(),
            kind: Kind::Regular,
            mode: 0o644,
            uid,
            gid,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
            link: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
        }
    }

    #[test]
    fn owner_minus_one_is_out_of_range_not_no_change() {
        assert!(meta(&entry(4_294_967_294, 4_294_967_294)).is_ok());
        for (u, g) in [(4_294_967_295, 0), (0, 4_294_967_295), (1 << 32, 0)] {
            match meta(&entry(u, g)) {
                Err(EntryError::Invalid(r)) => assert!(r.contains("out of range"), "{r}"),
                _ => panic!("uid {u} gid {g} accepted"),
            }
        }
    }
}
