//! What cases share: building layers, reading them back, comparing, crafting archives.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use graphdriver_api::{Change, CreateOpts, DriverError, GraphDriver, LayerId, MountOpts};
use graphdriver_kit::archive::{Header, Kind, TarWriter};
use graphdriver_kit::NaiveDiff;

use super::{Ctx, Skip};
use crate::tree_snapshot::{Compare, Snapshot};

/// A layer id from a literal.
pub fn id(s: &str) -> LayerId {
    LayerId::new(s).expect("literal ids are valid")
}

/// Options for a writable layer.
pub fn rw() -> CreateOpts {
    CreateOpts {
        read_write: true,
        ..CreateOpts::default()
    }
}

/// Creates `name` on `parent` and lets `f` write into it through a mount.
pub fn layer(
    ctx: &Ctx,
    name: &str,
    parent: Option<&str>,
    f: impl FnOnce(&Path) -> Result<()>,
) -> Result<LayerId> {
    let d = ctx.d();
    let lid = id(name);
    let p = parent.map(id);
    d.create(&lid, p.as_ref(), &rw())
        .with_context(|| format!("create {name}"))?;
    with_mount(d, &lid, f)?;
    Ok(lid)
}

/// Mounts `lid`, runs `f` on its root, and unmounts it whatever `f` returned.
pub fn with_mount<T>(
    d: &dyn GraphDriver,
    lid: &LayerId,
    f: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let path = d
        .get(lid, &MountOpts::default())
        .with_context(|| format!("mount {lid}"))?;
    let r = f(&path);
    d.put(lid).with_context(|| format!("unmount {lid}"))?;
    r
}

/// The tree of a layer as mounted.
pub fn view(ctx: &Ctx, lid: &LayerId) -> Result<Snapshot> {
    with_mount(ctx.d(), lid, Snapshot::capture)
}

/// Fails with both trees and their differences unless they are equal.
pub fn same_tree(left: &Snapshot, right: &Snapshot, how: Compare, what: &str) -> Result<()> {
    let diffs = left.diff(right, how);
    if diffs.is_empty() {
        return Ok(());
    }
    bail!(
        "{what}: trees differ\n{}\nleft tree:\n{}right tree:\n{}",
        diffs.join("\n"),
        left.render(60),
        right.render(60)
    )
}

/// `changes` of `lid` as `docker diff` lines, checked against the naive walk.
pub fn changes(ctx: &Ctx, lid: &LayerId) -> Result<Vec<String>> {
    let d = ctx.d();
    let got = d
        .changes(lid, None)
        .with_context(|| format!("changes of {lid}"))?;
    let naive = naive_changes(d, lid)?;
    if got != naive {
        bail!(
            "native and naive changes of {lid} disagree\nnative:\n  {}\nnaive:\n  {}",
            lines(&got).join("\n  "),
            lines(&naive).join("\n  ")
        );
    }
    Ok(lines(&got))
}

fn naive_changes(d: &dyn GraphDriver, lid: &LayerId) -> Result<Vec<Change>> {
    let parent = d.parent(lid)?;
    with_mount(d, lid, |layer| match &parent {
        Some(p) => with_mount(d, p, |base| Ok(NaiveDiff::changes(layer, base)?)),
        None => Ok(NaiveDiff::all_added(layer)?),
    })
}

fn lines(c: &[Change]) -> Vec<String> {
    c.iter().map(|c| c.to_string()).collect()
}

/// Fails unless `changes` of `lid` are exactly `expected` (in order).
pub fn expect_changes(ctx: &Ctx, lid: &LayerId, expected: &[&str]) -> Result<()> {
    let got = changes(ctx, lid)?;
    if got != expected {
        let tree = view(ctx, lid)?;
        bail!(
            "changes of {lid}:\n  got:      {got:?}\n  expected: {expected:?}\nlayer tree:\n{}",
            tree.render(60)
        );
    }
    Ok(())
}

/// The diff of `lid` against its parent, as bytes.
pub fn diff_bytes(ctx: &Ctx, lid: &LayerId) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    ctx.d()
        .diff(lid, None)?
        .read_to_end(&mut out)
        .with_context(|| format!("read diff of {lid}"))?;
    Ok(out)
}

/// Creates `name` on `parent` and applies `tar` to it; returns the applied size.
pub fn apply_new(
    ctx: &Ctx,
    name: &str,
    parent: Option<&LayerId>,
    tar: &[u8],
) -> Result<(LayerId, u64)> {
    let lid = id(name);
    ctx.d().create(&lid, parent, &CreateOpts::default())?;
    let size = ctx
        .d()
        .apply_diff(&lid, parent, &mut &tar[..])
        .with_context(|| format!("apply to {name}"))?;
    Ok((lid, size))
}

/// Fails unless `r` is an error `ok` accepts; returns that error.
pub fn expect_err<T: std::fmt::Debug>(
    r: std::result::Result<T, DriverError>,
    what: &str,
    ok: impl Fn(&DriverError) -> bool,
) -> Result<DriverError> {
    match r {
        Ok(v) => bail!("{what}: succeeded ({v:?}) but should have failed"),
        Err(e) if ok(&e) => Ok(e),
        Err(e) => bail!("{what}: wrong error: {e} ({e:?})"),
    }
}

/// Writes a file, creating parents.
pub fn write(path: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(path, data).with_context(|| format!("write {}", path.display()))
}

/// chmod.
pub fn chmod(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// lchown. An id this user namespace does not map (EINVAL: an unprivileged run maps 65,536
/// ids) skips the case.
pub fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(Skip(format!(
            "ids {uid}:{gid} are not mapped in this user namespace ({e})"
        ))
        .into()),
        r => r.with_context(|| format!("chown {}", path.display())),
    }
}

/// Sets an xattr on `path` itself. A `trusted.` name this process may not set (EPERM: it
/// needs CAP_SYS_ADMIN in the initial user namespace) skips the case.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    let n = CString::new(name)?;
    match rustix::fs::lsetxattr(path, &n, value, rustix::fs::XattrFlags::empty()) {
        Err(rustix::io::Errno::PERM) if name.starts_with("trusted.") => Err(Skip(format!(
            "this process may not set {name} (trusted xattrs need CAP_SYS_ADMIN in the \
             initial user namespace)"
        ))
        .into()),
        r => r.with_context(|| format!("set xattr {name} on {}", path.display())),
    }
}

/// A symlink.
pub fn link(target: &str, path: &Path) -> Result<()> {
    symlink(target, path).with_context(|| format!("symlink {}", path.display()))
}

/// A device node or fifo: `kind` is `c`, `b` or `p`.
pub fn mknod(path: &Path, kind: char, major: u32, minor: u32) -> Result<()> {
    let ft = match kind {
        'c' => rustix::fs::FileType::CharacterDevice,
        'b' => rustix::fs::FileType::BlockDevice,
        _ => rustix::fs::FileType::Fifo,
    };
    match rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        ft,
        rustix::fs::Mode::from_raw_mode(0o644),
        rustix::fs::makedev(major, minor),
    ) {
        Err(rustix::io::Errno::PERM) if kind != 'p' => Err(Skip(format!(
            "the kernel refuses this process device nodes ({}): it needs CAP_MKNOD in the \
             initial user namespace",
            path.display()
        ))
        .into()),
        r => r.with_context(|| format!("mknod {}", path.display())),
    }
}

/// Sets a path's mtime exactly.
pub fn set_mtime(path: &Path, sec: i64, nsec: i64) -> Result<()> {
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("set mtime of {}", path.display()))
}

/// Crafts archives entry by entry, malicious ones included.
pub struct TarBuilder {
    w: TarWriter<Vec<u8>>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        TarBuilder {
            w: TarWriter::new(Vec::new()),
        }
    }
}

impl TarBuilder {
    fn header(name: &str, kind: Kind, mode: u32) -> Header {
        Header {
            name: name.as_bytes().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 1_600_000_000,
            mtime_nsec: 0,
            link: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
        }
    }

    /// A regular file.
    pub fn file(mut self, name: &str, data: &[u8]) -> Self {
        let mut h = Self::header(name, Kind::Regular, 0o644);
        h.size = data.len() as u64;
        self.w
            .append(&h, Some(&mut &data[..]))
            .expect("writing to memory");
        self
    }

    /// A directory.
    pub fn dir(mut self, name: &str) -> Self {
        self.w
            .append(&Self::header(name, Kind::Directory, 0o755), None)
            .expect("writing to memory");
        self
    }

    /// A symlink.
    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        let mut h = Self::header(name, Kind::Symlink, 0o777);
        h.link = target.as_bytes().to_vec();
        self.w.append(&h, None).expect("writing to memory");
        self
    }

    /// A hard link.
    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        let mut h = Self::header(name, Kind::Hardlink, 0o644);
        h.link = target.as_bytes().to_vec();
        self.w.append(&h, None).expect("writing to memory");
        self
    }

    /// The archive.
    pub fn finish(self) -> Vec<u8> {
        self.w.finish().expect("writing to memory")
    }
}

/// The store's own directory (`.store`, records, graph, journal) under the driver's home:
/// `<root>/<driver>`, or the backend's own name for it (devmapper: `<root>/devicemapper`, as
/// docker names it).
pub fn store_meta(ctx: &Ctx) -> Result<PathBuf> {
    let meta = std::fs::read_dir(&ctx.root)?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(".store"))
        .find(|j| j.is_dir())
        .unwrap_or_else(|| ctx.root.join(ctx.driver_name()).join(".store"));
    ensure!(meta.is_dir(), "no store at {}", meta.display());
    Ok(meta)
}

/// A sentinel directory beside the driver root: fails if anything appeared in or changed it.
pub struct Sentinel {
    dir: PathBuf,
    before: Snapshot,
}

impl Sentinel {
    /// Makes `<work>/outside` with a file in it.
    pub fn new(ctx: &Ctx) -> Result<Sentinel> {
        let dir = ctx.work.join("outside");
        write(&dir.join("keep"), "untouched")?;
        Ok(Sentinel {
            before: Snapshot::capture(&dir)?,
            dir,
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Fails if anything under it changed.
    pub fn check(&self) -> Result<()> {
        let now = Snapshot::capture(&self.dir)?;
        same_tree(&self.before, &now, Compare::default(), "outside the layer")
    }
}

/// Fails unless `path` is absent.
pub fn absent(path: &Path) -> Result<()> {
    ensure!(
        std::fs::symlink_metadata(path).is_err(),
        "{} exists but should not",
        path.display()
    );
    Ok(())
}

/// The node at `rel` of `tree`, or an error naming the path and showing the tree.
pub fn node<'a>(tree: &'a Snapshot, rel: &str) -> Result<&'a crate::tree_snapshot::Node> {
    match tree.get(rel) {
        Some(n) => Ok(n),
        None => bail!("/{rel} is missing from the tree:\n{}", tree.render(60)),
    }
}

/// Fails unless the trees are equal in everything but the root directory's mtime.
///
/// Changes never list the root (`docker diff` has no entry for `/`), so a diff does not carry
/// it: applying a diff leaves the new layer's root mtime as its parent had it, while the layer
/// the diff came from changed its own root mtime by writing at the top level. The root's mode,
/// owner and xattrs are still compared, and every other entry completely.
pub fn same_tree_but_root_mtime(left: &Snapshot, right: &Snapshot, what: &str) -> Result<()> {
    let (mut l, mut r) = (left.clone(), right.clone());
    for s in [&mut l, &mut r] {
        if let Some(n) = s.nodes.get_mut(Path::new("")) {
            n.mtime_ns = 0;
        }
    }
    same_tree(&l, &r, Compare::default(), what)
}

/// Exports `lid` against its own parent, applies that to a new layer `name` on the same
/// parent, and fails unless the new layer equals `lid` (the whole tree for a layer without a
/// parent, all but the root's mtime otherwise: see [`same_tree_but_root_mtime`]), both have the
/// same changes, and the applied size equals both layers' `diff_size`. Returns the new layer.
pub fn round_trip(ctx: &Ctx, lid: &LayerId, name: &str) -> Result<LayerId> {
    let d = ctx.d();
    let parent = d.parent(lid)?;
    let tar = diff_bytes(ctx, lid)?;
    let (copy, applied) = apply_new(ctx, name, parent.as_ref(), &tar)?;
    let want = d.diff_size(lid, None)?;
    let got = d.diff_size(&copy, None)?;
    ensure!(
        applied == want && got == want,
        "sizes differ: apply_diff returned {applied}, diff_size of {lid} is {want}, \
         diff_size of {copy} is {got}"
    );
    let (original, applied_view) = (view(ctx, lid)?, view(ctx, &copy)?);
    let what = format!("{lid} (left) and its diff applied to {copy} (right)");
    match parent {
        None => same_tree(&original, &applied_view, Compare::default(), &what)?,
        Some(_) => same_tree_but_root_mtime(&original, &applied_view, &what)?,
    }
    let (ca, cb) = (changes(ctx, lid)?, changes(ctx, &copy)?);
    ensure!(
        ca == cb,
        "changes differ after a round trip\n  {lid}: {ca:?}\n  {copy}: {cb:?}"
    );
    Ok(copy)
}

/// Removes an xattr from `path` itself.
pub fn remove_xattr(path: &Path, name: &str) -> Result<()> {
    let n = CString::new(name)?;
    rustix::fs::lremovexattr(path, &n)
        .with_context(|| format!("remove xattr {name} from {}", path.display()))
}

/// Sets the mtime of `root` and of everything below it, children before their directory.
pub fn set_tree_mtimes(root: &Path, sec: i64, nsec: i64) -> Result<()> {
    let md = std::fs::symlink_metadata(root).with_context(|| format!("stat {}", root.display()))?;
    if md.is_dir() {
        for e in std::fs::read_dir(root).with_context(|| format!("read {}", root.display()))? {
            set_tree_mtimes(&e?.path(), sec, nsec)?;
        }
    }
    set_mtime(root, sec, nsec)
}

/// Renames like `mv`: overlayfs refuses to rename a directory of a lower layer (`EXDEV`,
/// unless redirect_dir is on, which would break native diffs), so then copy and delete.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            crate::fixture::run(std::process::Command::new("mv").arg(from).arg(to)).map(|_| ())
        }
        Err(e) => Err(e).with_context(|| format!("rename {} to {}", from.display(), to.display())),
    }
}
