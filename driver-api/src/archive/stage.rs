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
use std::path::Path;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps,
};
use rustix::io::Errno;

use super::entry_name::{components, marker, Marker};
use super::manifest::Manifest;
use crate::tree::{self, is_private_xattr, open_dir, proc_path};
use crate::{DriverError, Result};

/// Extracts `tar` into `tree` (an empty directory). `base` is the layer's current content,
/// where hardlinks may find targets that the archive itself does not carry.
pub(crate) fn stage(tar: &mut dyn Read, tree: &Path, base: &Path) -> Result<(Manifest, u64)> {
    let root = open_dir(tree)?;
    let base = open_dir(base)?;
    let mut st = Stager {
        root,
        base,
        cache: None,
        dir_times: Vec::new(),
        manifest: Manifest::default(),
        implicit: HashSet::new(),
        size: 0,
        buf: vec![0u8; 256 * 1024],
    };
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 20, tar));
    let mut last = String::new();
    let entries = archive
        .entries()
        .map_err(|e| DriverError::archive("", e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            let reason = if e.to_string().contains("unexpected EOF") {
                "archive is truncated".to_owned()
            } else {
                format!("unreadable header after this entry: {e}")
            };
            DriverError::archive(last.clone(), reason)
        })?;
        last = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        st.entry(&mut entry)
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
    root: OwnedFd,
    base: OwnedFd,
    /// The last parent directory resolved, by archive path.
    cache: Option<(Vec<u8>, OwnedFd)>,
    dir_times: Vec<(Vec<u8>, Timespec)>,
    manifest: Manifest,
    implicit: HashSet<Vec<u8>>,
    size: u64,
    buf: Vec<u8>,
}

impl Stager {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> EntryResult<()> {
        let raw = entry.path_bytes().into_owned();
        let comps = components(&raw).or_else(invalid)?;
        let kind = entry.header().entry_type();
        let meta = meta(entry)?;
        let Some((base, parents)) = comps.split_last() else {
            // "./": the layer root itself
            if !kind.is_dir() {
                return invalid("the layer root can only be a directory");
            }
            self.manifest.root_explicit = true;
            let root = self.root.try_clone().op("duplicate fd")?;
            return self.dir_meta(root.as_fd(), &meta, Vec::new());
        };
        let parent_path = parents.join(&b'/');
        match marker(base).or_else(invalid)? {
            Marker::AufsMeta => return Ok(()),
            Marker::Opaque => {
                self.parent(&parent_path, parents)?;
                self.manifest.opaque.push(parent_path);
                return Ok(());
            }
            Marker::Whiteout(name) => {
                self.parent(&parent_path, parents)?;
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
        let dir = self.parent(&parent_path, parents)?;
        let dir = dir.as_fd();
        let name = CString::new(base.to_vec()).or_else(|_| invalid("NUL in name"))?;
        let full = comps.join(&b'/');
        use tar::EntryType as T;
        match kind {
            T::Directory => {
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
            T::Regular | T::Continuous | T::GNUSparse => {
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
                    let n = match entry.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e).op("read file data"),
                    };
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
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                self.clear(dir, &name, &full)?;
                self.hardlink(&target, dir, &name)
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                if target.is_empty() {
                    return invalid("symlink without a target");
                }
                self.clear(dir, &name, &full)?;
                rfs::symlinkat(OsStr::from_bytes(&target), dir, &name).op("create symlink")?;
                self.node_meta(dir, &name, &meta, false)
            }
            T::Char | T::Block | T::Fifo => {
                self.clear(dir, &name, &full)?;
                let (ft, dev) = match kind {
                    T::Char | T::Block => {
                        let h = entry.header();
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if kind == T::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rfs::makedev(major, minor))
                    }
                    _ => (FileType::Fifo, 0),
                };
                rfs::mknodat(dir, &name, ft, Mode::from_raw_mode(0o600), dev).op("create node")?;
                self.node_meta(dir, &name, &meta, true)
            }
            T::XGlobalHeader => Ok(()),
            other => invalid(format!(
                "unsupported entry type {:?}",
                other.as_byte() as char
            )),
        }
    }

    /// Resolves (creating implicitly) the parent directory of an entry inside the staging tree.
    fn parent(&mut self, path: &[u8], comps: &[&[u8]]) -> EntryResult<OwnedFd> {
        if let Some((p, fd)) = &self.cache {
            if p == path {
                return fd.try_clone().op("duplicate fd");
            }
        }
        let mut cur = self.root.try_clone().op("duplicate fd")?;
        let mut sofar: Vec<u8> = Vec::new();
        for c in comps {
            if !sofar.is_empty() {
                sofar.push(b'/');
            }
            sofar.extend_from_slice(c);
            let name = CString::new(c.to_vec()).or_else(|_| invalid("NUL in name"))?;
            cur = match tree::open_dir_at(cur.as_fd(), &name) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    rfs::mkdirat(&cur, &name, Mode::from_raw_mode(0o755)).op("create directory")?;
                    self.implicit.insert(sofar.clone());
                    tree::open_dir_at(cur.as_fd(), &name).op("open directory")?
                }
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    return invalid(format!(
                        "parent {} is not a directory in this archive (a symlink cannot redirect an entry)",
                        String::from_utf8_lossy(&sofar)
                    ))
                }
                Err(e) => return Err(e).op("open directory"),
            };
        }
        self.cache = Some((path.to_vec(), cur.try_clone().op("duplicate fd")?));
        Ok(cur)
    }

    /// Removes an earlier entry of the same name (a later entry wins, as in tar).
    fn clear(&mut self, dir: BorrowedFd<'_>, name: &CStr, full: &[u8]) -> EntryResult<()> {
        match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e).op("stat"),
            Ok(_) => {
                // A replaced directory invalidates the parent cache below it.
                if let Some((p, _)) = &self.cache {
                    if p.starts_with(full) {
                        self.cache = None;
                    }
                }
                tree::remove_entry_at(dir, name).op("replace")
            }
        }
    }

    fn hardlink(&mut self, target: &[u8], dir: BorrowedFd<'_>, name: &CStr) -> EntryResult<()> {
        let comps = components(target).or_else(|r| invalid(format!("hard link target: {r}")))?;
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
        // Then in the layer's existing content, resolved inside it.
        let rel = if tparent.is_empty() {
            b".".to_vec()
        } else {
            tparent
        };
        let pfd = match rfs::openat2(
            &self.base,
            OsStr::from_bytes(&rel),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => {
                return invalid(format!("hard link target {display} does not exist"))
            }
            Err(e) => return Err(e).op("open hard link target"),
        };
        match rfs::linkat(&pfd, &tname, dir, name, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(Errno::NOENT) => invalid(format!("hard link target {display} does not exist")),
            Err(Errno::PERM) => invalid(format!("hard link to {display}, a directory")),
            Err(Errno::XDEV) => {
                let src = rfs::openat(
                    &pfd,
                    &tname,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .op("open hard link target")?;
                let st = rfs::fstat(&src).op("stat hard link target")?;
                let dst = rfs::openat(
                    dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(st.st_mode & 0o7777),
                )
                .op("create file")?;
                io::copy(&mut File::from(src), &mut File::from(dst)).op("copy hard link target")?;
                Ok(())
            }
            Err(e) => Err(e).op("create hard link"),
        }
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
        for (path, mtime) in self.dir_times.iter().rev() {
            if !seen.insert(path.clone()) {
                continue;
            }
            let fd = if path.is_empty() {
                self.root.try_clone().op("duplicate fd")?
            } else {
                match rfs::openat2(
                    &self.root,
                    OsStr::from_bytes(path),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
                ) {
                    Ok(fd) => fd,
                    // a later entry replaced the directory: its time went with it
                    Err(Errno::NOTDIR) | Err(Errno::NOENT) | Err(Errno::LOOP) => continue,
                    Err(e) => return Err(e).op("open directory"),
                }
            };
            rfs::futimens(&fd, &times(*mtime)).op("set times")?;
        }
        Ok(())
    }
}

fn meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> EntryResult<Meta> {
    let h = entry.header();
    let bad = |what: &str| EntryError::Invalid(format!("unreadable {what} in header"));
    let mut m = Meta {
        mode: h.mode().map_err(|_| bad("mode"))? & 0o7777,
        uid: h
            .uid()
            .map_err(|_| bad("uid"))?
            .try_into()
            .map_err(|_| bad("uid"))?,
        gid: h
            .gid()
            .map_err(|_| bad("gid"))?
            .try_into()
            .map_err(|_| bad("gid"))?,
        mtime: Timespec {
            tv_sec: h.mtime().map_err(|_| bad("mtime"))? as i64,
            tv_nsec: 0,
        },
        xattrs: Vec::new(),
    };
    let Some(exts) = entry.pax_extensions().op("read PAX header")? else {
        return Ok(m);
    };
    for ext in exts {
        let ext = ext.op("read PAX header")?;
        let Ok(key) = ext.key() else { continue };
        let value = ext.value_bytes();
        let text = || std::str::from_utf8(value).ok();
        match key {
            "mtime" => {
                m.mtime = text()
                    .and_then(parse_time)
                    .ok_or_else(|| bad("PAX mtime"))?
            }
            "uid" => {
                m.uid = text()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| bad("PAX uid"))?
            }
            "gid" => {
                m.gid = text()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| bad("PAX gid"))?
            }
            k if k.starts_with("GNU.sparse.") => {
                return invalid("GNU PAX sparse files are not supported (archive without --sparse)")
            }
            k => {
                if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                    if !is_private_xattr(name.as_bytes()) {
                        let cname = CString::new(name).or_else(|_| invalid("NUL in xattr name"))?;
                        m.xattrs.push((cname, value.to_vec()));
                    }
                }
            }
        }
    }
    Ok(m)
}

/// Parses a PAX time, `[-]sec[.frac]`.
pub(crate) fn parse_time(t: &str) -> Option<Timespec> {
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (sec, frac) = t.split_once('.').unwrap_or((t, ""));
    let sec: i64 = sec.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits = frac
        .as_bytes()
        .iter()
        .take(9)
        .map(|b| i64::from(b - b'0'))
        .collect::<Vec<_>>();
    digits.resize(9, 0);
    let nsec = digits.iter().fold(0i64, |acc, d| acc * 10 + d);
    Some(match (neg, nsec) {
        (false, n) => Timespec {
            tv_sec: sec,
            tv_nsec: n,
        },
        (true, 0) => Timespec {
            tv_sec: -sec,
            tv_nsec: 0,
        },
        (true, n) => Timespec {
            tv_sec: -sec - 1,
            tv_nsec: 1_000_000_000 - n,
        },
    })
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

    #[test]
    fn parses_pax_times() {
        let t = parse_time("1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 500_000_000));
        let t = parse_time("-1.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 500_000_000));
        let t = parse_time("12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        let t = parse_time("1.0123456789").unwrap();
        assert_eq!(t.tv_nsec, 12_345_678);
        assert!(parse_time("x").is_none());
        assert!(parse_time("1.x").is_none());
    }
}
