//! The overlay2 graph driver: each layer is an overlayfs upper directory over its
//! ancestors' directories.
//!
//! Layout under `<root>/overlay2/`:
//!
//! ```text
//! <id>/diff     the layer's own changes (the overlay upper directory)
//! <id>/work     overlay's work directory
//! <id>/merged   the mount point while the layer is mounted
//! <id>/link     the layer's short link name
//! l/<name>      short link → ../<id>/diff (legacy mounts name lower layers through these)
//! ```
//!
//! What it does better than its peers:
//!
//! - **No 128-layer cap.** Mounts go through the new mount API, one `fsconfig("lowerdir+")`
//!   per layer, up to the kernel's 500 lower layers, with an error naming that limit past
//!   it. Legacy `mount(2)` is the fallback on kernels before 6.8 (or when forced with
//!   `--opt overlay2.mount_api=legacy`, which graphctl also takes as
//!   `GRAPHDRIVER_OVERLAY_MOUNT_API=legacy`); there the
//!   option string is checked against the page size before mounting, since the kernel
//!   silently cuts it.
//! - **Links repaired.** The layer graph comes from the store's records, never from `lower`
//!   files; missing or wrong `l/` links and `link` files are recreated when the driver opens.
//! - **No EBUSY from leaked mounts.** `put` detaches the mount and removes the mount point,
//!   and every mount is private, so a copy held in another mount namespace cannot make a
//!   later `put` or `remove` fail.
//! - **Changes cost what changed.** `changes` and `diff` read the upper directory (and of
//!   the parent only the names it mentions), and agree with the naive walk exactly; mounts
//!   use `index=off,redirect_dir=off,metacopy=off` so the upper directory stays a plain diff.
//! - **Native apply.** Archives are written straight into the upper directory with overlay
//!   whiteouts, after being staged (see `graphdriver_kit::archive`).

mod mount_options;
mod short_link;
mod sys;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use graphdriver_api::{
    Change, CreateOpts, DriverError, GraphDriver, IoContext, LayerId, MountOpts, MountSpec, Result,
    Status,
};
use graphdriver_kit::archive::{ApplyTarget, OverlayXattrs};
use graphdriver_kit::fs::mountinfo::MountTable;
use graphdriver_kit::fs::quota::ProjectQuota;
use graphdriver_kit::options::{DriverOptions, OptionParser, StoreOptions};
use graphdriver_kit::store::{Backend, LayerStore};
use graphdriver_kit::{fs::layer_mount, fs::tree, fs::BackingFs, NaiveDiff};
use rustix::mount::{self as rmount, MountPropagationFlags, UnmountFlags};

pub use mount_options::{OverlayMount, TooDeep, MAX_LOWERS};

/// The overlay2 driver: the shared layer store over [`Overlay`].
pub type Overlay2Driver = LayerStore<Overlay>;

/// How mounts are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountApi {
    /// `fsopen`/`fsconfig("lowerdir+")`/`fsmount`/`move_mount` (Linux 6.8 and later).
    New,
    /// `mount(2)` with an option string naming lowers through `l/` short links.
    Legacy,
}

/// Overlay-specific failures (under [`DriverError::Backend`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverlayError {
    /// The chain is deeper than the kernel or the legacy option string allows.
    #[error("cannot mount layer {id}: {reason}")]
    TooDeep {
        /// The layer.
        id: LayerId,
        /// Which limit.
        reason: TooDeep,
    },
}

/// Which mount API overlay2 mounts with (`overlay2.mount_api`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MountApiChoice {
    /// The new mount API where the kernel has `lowerdir+` (6.8), else legacy `mount(2)`.
    #[default]
    Auto,
    /// The new mount API (`fsopen`/`fsconfig`), one `lowerdir+` per layer.
    New,
    /// Legacy `mount(2)` with short links, within a page of options.
    Legacy,
}

/// overlay2's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Overlay2Options {
    /// `overlay2.mount_api=auto|new|legacy` (default `auto`).
    pub mount_api: MountApiChoice,
    /// The layer store's (`store.*`, see [`graphdriver_kit::options`]).
    pub store: StoreOptions,
}

impl DriverOptions for Overlay2Options {
    const DRIVER: &'static str = "overlay2";

    fn set(&mut self, p: &OptionParser<'_>, key: &str, value: &str) -> Result<bool> {
        match (key, value) {
            ("overlay2.mount_api", "auto") => self.mount_api = MountApiChoice::Auto,
            ("overlay2.mount_api", "new") => self.mount_api = MountApiChoice::New,
            ("overlay2.mount_api", "legacy") => self.mount_api = MountApiChoice::Legacy,
            ("overlay2.mount_api", other) => {
                return Err(p.unsupported(format!(
                    "overlay2.mount_api={other}: want auto, new or legacy"
                )))
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn store_mut(&mut self) -> &mut StoreOptions {
        &mut self.store
    }
}

graphdriver_kit::driver_options!(Overlay2Options);

/// Opens (creating if needed) the overlay2 driver under `root`, with options as `key=value`
/// (see [`Overlay2Options`]).
pub fn open(root: &Path, opts: &BTreeMap<String, String>) -> Result<Overlay2Driver> {
    open_with(root, &Overlay2Options::try_from(opts)?)
}

/// [`open`] with typed options.
pub fn open_with(root: &Path, opts: &Overlay2Options) -> Result<Overlay2Driver> {
    let unsupported = |reason: String| DriverError::unsupported("overlay2", reason);
    // canonical, so mount points compare equal to what /proc/self/mountinfo lists
    std::fs::create_dir_all(root).ctx("create directory", root)?;
    let root = &root.canonicalize().ctx("resolve", root)?;
    let home = root.join("overlay2");
    for d in ["l", "trash"] {
        let p = home.join(d);
        std::fs::create_dir_all(&p).ctx("create directory", &p)?;
    }
    // what a crash left in the trash (a concurrent remove's own entry vanishing meanwhile is
    // fine: removal tolerates that)
    tree::sweep(&home.join("trash"))?;
    let fs = BackingFs::of(&home)?;
    if fs.name() == "overlayfs" {
        return Err(unsupported(format!(
            "{} is itself on overlayfs, which cannot be an upper layer: put the root on ext4, xfs or btrfs",
            home.display()
        )));
    }
    let xattrs = overlay_xattrs(&home)?;
    // Probing mounts and unmounts overlays (tens of milliseconds): remember what this boot
    // found, so that opening the driver again is cheap.
    let boot = graphdriver_kit::store::boot_id()?;
    let probed_file = home.join("probed");
    let probed = std::fs::read_to_string(&probed_file).ok().and_then(|s| {
        let (b, api) = s.split_once(' ')?;
        match (b == boot, api.trim()) {
            (true, "new") => Some(MountApi::New),
            (true, "legacy") => Some(MountApi::Legacy),
            _ => None,
        }
    });
    let api = match (opts.mount_api, probed) {
        // legacy mounts work wherever the new API did
        (MountApiChoice::Legacy, Some(_)) => MountApi::Legacy,
        (MountApiChoice::New | MountApiChoice::Auto, Some(MountApi::New)) => MountApi::New,
        (MountApiChoice::Auto, Some(MountApi::Legacy)) => MountApi::Legacy,
        (requested, _) => {
            probe_d_type(&home).map_err(unsupported)?;
            let api = match requested {
                MountApiChoice::Legacy => MountApi::Legacy,
                MountApiChoice::New => MountApi::New,
                MountApiChoice::Auto if probe_mount(&home, MountApi::New, xattrs).is_ok() => {
                    MountApi::New
                }
                MountApiChoice::Auto => MountApi::Legacy,
            };
            probe_mount(&home, api, xattrs).map_err(|e| {
                unsupported(format!(
                    "overlay does not mount here ({api:?} mount API): {e}"
                ))
            })?;
            let name = if api == MountApi::New {
                "new"
            } else {
                "legacy"
            };
            graphdriver_kit::store::write_atomic(
                &probed_file,
                format!("{boot} {name}").as_bytes(),
            )?;
            api
        }
    };
    let shared_parent = MountTable::read()?.propagates_below(&home);
    let quota = ProjectQuota::probe(&home, home.join("quota-projid"))?;
    let store = LayerStore::open_with(
        &home,
        Overlay {
            home: home.clone(),
            api,
            xattrs,
            shared_parent,
            fs: fs.name(),
            quota,
        },
        opts.store.clone(),
    )?;
    {
        let _lock = store.lock()?;
        store.backend().repair_links(&store.list()?)?;
    }
    sweep_idmap_staging(&home.join(".idmap"));
    Ok(store)
}

/// Detaches and removes what a process that died while making an idmapped overlay left
/// attached under `staging` (see [`IdmappedLayers`]): directories `mount.<pid>.<n>` whose
/// process is gone (as this pid namespace sees it) and whose `.lock` nobody holds (a live
/// process in another pid namespace holds its own). Best effort: what cannot be swept now
/// stays for the next open, and the store opens.
fn sweep_idmap_staging(staging: &Path) {
    let Ok(entries) = std::fs::read_dir(staging) else {
        return;
    };
    for dir in entries.flatten().map(|e| e.path()) {
        let pid = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| Path::new("/proc").join(p.to_string()).exists()) {
            continue;
        }
        let lock_file = dir.join(".lock");
        let _lock = if lock_file.exists() {
            match graphdriver_kit::store::FileLock::try_exclusive(&lock_file) {
                Ok(Some(l)) => Some(l),
                _ => continue,
            }
        } else {
            None
        };
        let _ = rmount::unmount(&dir, UnmountFlags::DETACH);
        for sub in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = sub.path();
            if p == lock_file {
                continue;
            }
            let _ = layer_mount::unmount_and_remove(&p);
        }
        let _ = std::fs::remove_file(&lock_file);
        let _ = std::fs::remove_dir(&dir);
    }
}

/// Where this store's layers keep overlayfs's xattrs, fixed when the store is made (the file
/// `.xattrs`; a store with layers and no such file is from before it, and trusted): `trusted.overlay.*` where this process may set trusted xattrs, else (an
/// unprivileged user in a user namespace) `user.overlay.*`, mounted with `userxattr`. A store
/// made with trusted xattrs cannot be used by a process that may not set them.
fn overlay_xattrs(home: &Path) -> Result<OverlayXattrs> {
    // a dot name: layer ids never begin with one
    let file = home.join(".xattrs");
    let may_trust = || {
        let name = c"trusted.graphdriver-probe";
        match rustix::fs::setxattr(home, name, b"1", rustix::fs::XattrFlags::empty()) {
            Ok(()) => {
                let _ = rustix::fs::removexattr(home, name);
                Ok(true)
            }
            Err(rustix::io::Errno::PERM) => Ok(false),
            Err(e) => Err(e).ctx("set a trusted xattr on", home),
        }
    };
    let kept = match std::fs::read_to_string(&file) {
        Ok(t) if t.trim() == "user" => OverlayXattrs::User,
        Ok(t) if t.trim() == "trusted" => OverlayXattrs::Trusted,
        Ok(t) => {
            return Err(DriverError::Corrupt {
                path: file,
                reason: format!("{:?} is neither trusted nor user", t.trim()),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // a store made before this file existed kept trusted xattrs
            let has_layers = std::fs::read_dir(home.join(".store/layers"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            let x = if has_layers || may_trust()? {
                OverlayXattrs::Trusted
            } else {
                OverlayXattrs::User
            };
            let name = if x == OverlayXattrs::User {
                "user"
            } else {
                "trusted"
            };
            graphdriver_kit::store::write_atomic(&file, name.as_bytes())?;
            x
        }
        Err(e) => return Err(e).ctx("read", &file),
    };
    if kept == OverlayXattrs::Trusted && !may_trust()? {
        return Err(DriverError::Unsupported {
            driver: "overlay2",
            reason: format!(
                "the layers of {} keep overlayfs's xattrs as trusted.overlay.*, which this \
                 process may not set (an unprivileged user): use a store made by that user",
                home.display()
            ),
        });
    }
    Ok(kept)
}

/// Refuses a backing filesystem without `d_type` (overlay needs it to find whiteouts).
fn probe_d_type(home: &Path) -> std::result::Result<(), String> {
    let dir = tree::unique_dir(&home.join(".probe"), "dtype").map_err(|e| e.to_string())?;
    let r = (|| -> std::io::Result<bool> {
        std::fs::write(dir.join("f"), b"")?;
        let fd = tree::open_dir(&dir).map_err(std::io::Error::other)?;
        let mut d = rustix::fs::Dir::read_from(&fd)?;
        while let Some(e) = d.read() {
            let e = e?;
            if e.file_name() == c"f" {
                return Ok(e.file_type() != rustix::fs::FileType::Unknown);
            }
        }
        Ok(false)
    })();
    let _ = tree::remove_tree(&dir);
    match r {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "the filesystem under {} does not report file types in directory entries (d_type), \
             which overlay needs: on xfs reformat with `mkfs.xfs -n ftype=1`",
            home.display()
        )),
        Err(e) => Err(format!("cannot check d_type support: {e}")),
    }
}

/// Mounts and unmounts a one-lower overlay with `api`.
fn probe_mount(
    home: &Path,
    api: MountApi,
    xattrs: OverlayXattrs,
) -> std::result::Result<(), String> {
    let dir = tree::unique_dir(&home.join(".probe"), "mount").map_err(|e| e.to_string())?;
    let r = (|| -> std::result::Result<(), String> {
        for d in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir(dir.join(d)).map_err(|e| e.to_string())?;
        }
        std::fs::write(dir.join("lower/f"), b"x").map_err(|e| e.to_string())?;
        let m = OverlayMount {
            lowers: vec![dir.join("lower")],
            upper: Some((dir.join("upper"), dir.join("work"))),
            userxattr: xattrs == OverlayXattrs::User,
        };
        mount_overlay(&m, &dir.join("merged"), false, api, &dir, None)
            .map_err(|e| e.to_string())?;
        let seen = dir.join("merged/f").exists();
        let _ = rmount::unmount(dir.join("merged"), UnmountFlags::DETACH);
        if seen {
            Ok(())
        } else {
            Err("the lower layer is not visible through the mount".into())
        }
    })();
    let _ = tree::remove_tree(&dir);
    r
}

/// The layers of an overlay as idmapped mounts (see [`idmapped_layers`]), in the order of
/// [`OverlayMount`]'s fields, as directory fds for `fsconfig`. overlayfs clones each layer's
/// mount privately, which the kernel allows only for a mount attached in this namespace: the
/// idmapped mounts are attached under a staging directory while the overlay is made, and
/// detached (with the directory removed) when this is dropped.
struct IdmappedLayers {
    /// The host uid and gid of the map's root, which the mount is made as.
    owner: (u32, u32),
    staging: PathBuf,
    /// Held while the staging is in use (`<staging>/.lock`): the sweep at open leaves a
    /// staging whose lock is held, whatever pid namespace its process is in.
    lock: Option<graphdriver_kit::store::FileLock>,
    attached: Vec<PathBuf>,
    lowers: Vec<std::os::fd::OwnedFd>,
    /// The upper and work directories, both inside one idmapped mount of the layer's
    /// directory (overlayfs wants them on one mount).
    upper: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
}

impl IdmappedLayers {
    /// Attaches an idmapped copy of `src`'s mount at `<staging>/<name>`.
    fn attach(
        &mut self,
        src: &Path,
        name: &str,
        ns: &graphdriver_kit::idmap::UserNs,
    ) -> Result<PathBuf> {
        let at = self.staging.join(name);
        std::fs::create_dir(&at).ctx("create staging mount point", &at)?;
        // removed with the staging whatever happens next
        self.attached.push(at.clone());
        graphdriver_kit::idmap::attach_idmapped(src, &at, ns)?;
        Ok(at)
    }
}

impl Drop for IdmappedLayers {
    fn drop(&mut self) {
        // one lazy unmount of the staging directory takes every layer attached below it
        // (each unmount waits for an RCU grace period: one, not one per layer)
        if rmount::unmount(&self.staging, UnmountFlags::DETACH).is_err() {
            for at in &self.attached {
                let _ = rmount::unmount(at, UnmountFlags::DETACH);
            }
        }
        for at in &self.attached {
            let _ = std::fs::remove_dir(at);
        }
        let _ = std::fs::remove_file(self.staging.join(".lock"));
        let _ = std::fs::remove_dir(&self.staging);
        self.lock = None;
    }
}

/// Each layer of `m` as an idmapped mount showing ids through `ns`, attached under a new
/// directory in `staging`; paths relative to `base`. The upper and work directories must
/// share a parent (the layer's directory).
fn idmapped_layers(
    m: &OverlayMount,
    base: &Path,
    staging: &Path,
    ns: &graphdriver_kit::idmap::UserNs,
) -> Result<IdmappedLayers> {
    use rustix::fs::{open, Mode, OFlags};
    let open_dir = |path: &Path| {
        open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .ctx("open the idmapped layer", path)
    };
    let owner = match (ns.map().host_uid(0), ns.map().host_gid(0)) {
        (Some(u), Some(g)) => (u, g),
        _ => {
            return Err(DriverError::Unsupported {
                driver: "overlay2",
                reason: format!(
                    "id map {} has no root: overlayfs works in the upper directory as the \
                     map's root",
                    ns.map()
                ),
            })
        }
    };
    let dir = tree::unique_dir(staging, "mount")?;
    let lock = match graphdriver_kit::store::FileLock::exclusive(&dir.join(".lock")) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
    };
    let mut layers = IdmappedLayers {
        owner,
        staging: dir,
        lock: Some(lock),
        attached: Vec::new(),
        lowers: Vec::with_capacity(m.lowers.len()),
        upper: None,
    };
    // the staging directory is a private mount of its own, so the layers attached below it
    // leave with one unmount and propagate nowhere
    rmount::mount_bind(&layers.staging, &layers.staging)
        .ctx("bind the idmap staging directory", &layers.staging)?;
    rmount::mount_change(&layers.staging, MountPropagationFlags::PRIVATE)
        .ctx("make private", &layers.staging)?;
    for (i, l) in m.lowers.iter().enumerate() {
        let at = layers.attach(&base.join(l), &i.to_string(), ns)?;
        layers.lowers.push(open_dir(&at)?);
    }
    if let Some((upper, work)) = &m.upper {
        let dir = base.join(upper);
        let (Some(parent), Some(u), Some(w)) = (dir.parent(), upper.file_name(), work.file_name())
        else {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput))
                .ctx("split the upper directory", &dir);
        };
        let at = layers.attach(parent, "upper", ns)?;
        layers.upper = Some((open_dir(&at.join(u))?, open_dir(&at.join(w))?));
    }
    Ok(layers)
}

/// Mounts `m` at `target`. Legacy mounts resolve relative paths from `base`. With `mapped`
/// (new API only), overlayfs takes those idmapped mounts as its layers instead of the paths.
fn mount_overlay(
    m: &OverlayMount,
    target: &Path,
    read_only: bool,
    api: MountApi,
    base: &Path,
    mapped: Option<&IdmappedLayers>,
) -> std::io::Result<()> {
    if let Some(layers) = mapped {
        // on a thread of its own acting as the map's root: overlayfs keeps the credentials
        // it was made with for its work in the (idmapped) upper directory
        return std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("idmapped-mount".into())
                .spawn_scoped(s, || {
                    sys::act_on_files_as(layers.owner.0, layers.owner.1)?;
                    mount_overlay_here(m, target, read_only, api, base, Some(layers))
                })?
                .join()
                .map_err(|_| std::io::Error::other("idmapped mount thread panicked"))?
        });
    }
    mount_overlay_here(m, target, read_only, api, base, None)
}

/// [`mount_overlay`] on the calling thread.
fn mount_overlay_here(
    m: &OverlayMount,
    target: &Path,
    read_only: bool,
    api: MountApi,
    base: &Path,
    mapped: Option<&IdmappedLayers>,
) -> std::io::Result<()> {
    match api {
        MountApi::New => {
            use rustix::mount::{
                fsconfig_create, fsconfig_set_fd, fsconfig_set_string, fsmount, fsopen, move_mount,
                FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags,
            };
            let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
            match mapped {
                Some(layers) => {
                    // a kernel that takes no layer fds says EINVAL here: that, and only
                    // that, is "unsupported" (ErrorKind::Unsupported) to the caller
                    let set_fd = |key: &str, fd: &std::os::fd::OwnedFd| {
                        fsconfig_set_fd(&fs, key, fd).map_err(|e| match e {
                            rustix::io::Errno::INVAL => std::io::Error::new(
                                std::io::ErrorKind::Unsupported,
                                format!("fsconfig {key} with an fd: {e}"),
                            ),
                            e => e.into(),
                        })
                    };
                    for l in &layers.lowers {
                        set_fd("lowerdir+", l)?;
                    }
                    if let Some((upper, work)) = &layers.upper {
                        set_fd("upperdir", upper)?;
                        set_fd("workdir", work)?;
                    }
                }
                None => {
                    for l in &m.lowers {
                        fsconfig_set_string(&fs, "lowerdir+", base.join(l))?;
                    }
                    if let Some((upper, work)) = &m.upper {
                        fsconfig_set_string(&fs, "upperdir", base.join(upper))?;
                        fsconfig_set_string(&fs, "workdir", base.join(work))?;
                    }
                }
            }
            for (k, v) in mount_options::fixed_options(m.userxattr) {
                fsconfig_set_string(&fs, k, v)?;
            }
            if m.userxattr {
                rustix::mount::fsconfig_set_flag(&fs, "userxattr")?;
            }
            fsconfig_create(&fs)?;
            let attrs = if read_only {
                MountAttrFlags::MOUNT_ATTR_RDONLY
            } else {
                MountAttrFlags::empty()
            };
            let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
            move_mount(
                mnt.as_fd(),
                "",
                rustix::fs::CWD,
                target,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )?;
            // the fds close here: an open fsmount fd would make a later unmount EBUSY
            Ok(())
        }
        MountApi::Legacy => {
            let opts = m.legacy_options().map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
            })?;
            let (base, target) = (base.to_owned(), target.to_owned());
            // chdir on a thread of its own (unshare CLONE_FS), so relative short-link paths
            // work without moving the whole process's working directory
            std::thread::spawn(move || -> std::io::Result<()> {
                sys::unshare_fs()?;
                std::env::set_current_dir(&base)?;
                let flags = if read_only {
                    rmount::MountFlags::RDONLY
                } else {
                    rmount::MountFlags::empty()
                };
                let data = std::ffi::CString::new(opts).map_err(std::io::Error::other)?;
                rmount::mount("overlay", &target, "overlay", flags, data.as_c_str())?;
                Ok(())
            })
            .join()
            .map_err(|_| std::io::Error::other("legacy mount thread panicked"))?
        }
    }
}

/// The overlay2 backend.
#[derive(Debug)]
pub struct Overlay {
    home: PathBuf,
    api: MountApi,
    /// Where overlayfs's xattrs live in this store's layers.
    xattrs: OverlayXattrs,
    /// Whether the mount holding the home is shared, so each new mount must be made private.
    shared_parent: bool,
    fs: &'static str,
    quota: std::result::Result<ProjectQuota, String>,
}

impl Overlay {
    fn dir(&self, id: &LayerId) -> PathBuf {
        self.home.join(id.as_str())
    }

    fn diff(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("diff")
    }

    /// The mount API in use.
    pub fn mount_api(&self) -> MountApi {
        self.api
    }

    fn short_name(&self, id: &LayerId) -> Option<String> {
        let s = std::fs::read_to_string(self.dir(id).join("link")).ok()?;
        let s = s.trim().to_owned();
        short_link::is_valid(&s).then_some(s)
    }

    /// Makes sure every layer has a valid `link` file and an `l/` link to its diff, and
    /// removes links that lead nowhere.
    fn repair_links(&self, ids: &[LayerId]) -> Result<()> {
        let l = self.home.join("l");
        let mut wanted = std::collections::HashSet::new();
        for id in ids {
            // A layer whose directory is gone is fsck's to report (missing data), and its
            // own operations fail with a clear error: it must not stop the store opening.
            if !self.dir(id).is_dir() {
                continue;
            }
            let name = match self.short_name(id) {
                Some(n) => n,
                None => {
                    let n = short_link::random_name()
                        .ctx("make a short link name for", self.dir(id))?;
                    graphdriver_kit::store::write_atomic(&self.dir(id).join("link"), n.as_bytes())?;
                    n
                }
            };
            let link = l.join(&name);
            let target = PathBuf::from(format!("../{id}/diff"));
            if std::fs::read_link(&link).ok().as_ref() != Some(&target) {
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&target, &link).ctx("create short link", &link)?;
            }
            wanted.insert(name);
        }
        for ent in std::fs::read_dir(&l).ctx("read directory", &l)? {
            let ent = ent.ctx("read directory", &l)?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if !wanted.contains(&name) {
                let _ = std::fs::remove_file(ent.path());
            }
        }
        Ok(())
    }

    fn lowers(&self, ids: &[LayerId]) -> Result<Vec<PathBuf>> {
        ids.iter()
            .map(|a| match self.api {
                MountApi::New => Ok(self.diff(a)),
                MountApi::Legacy => {
                    let name = self.short_name(a).ok_or_else(|| DriverError::Corrupt {
                        path: self.dir(a).join("link"),
                        reason: "no valid short link name (reopen the driver to repair it)".into(),
                    })?;
                    Ok(PathBuf::from("l").join(name))
                }
            })
            .collect()
    }
}

impl Backend for Overlay {
    fn name(&self) -> &'static str {
        "overlay2"
    }

    /// The overlay mount over the layer's own directories with absolute paths (lowers by
    /// their short links, the shortest absolute names they have), while its options fit in
    /// a page; a layer without parent is a bind mount of its directory.
    fn mount_spec(&self, id: &LayerId, ancestors: &[LayerId]) -> Result<Option<MountSpec>> {
        if ancestors.is_empty() {
            return Ok(Some(MountSpec {
                fs_type: "bind".into(),
                source: self.diff(id),
                options: vec!["rbind".into(), "rw".into()],
            }));
        }
        let lowers = ancestors
            .iter()
            .map(|a| match self.short_name(a) {
                Some(name) => self.home.join("l").join(name),
                None => self.diff(a),
            })
            .collect();
        let m = OverlayMount {
            lowers,
            upper: Some((self.diff(id), self.dir(id).join("work"))),
            userxattr: self.xattrs == OverlayXattrs::User,
        };
        // `,` and `:` would split the option string where the kernel does not expect it; a
        // name that is not UTF-8 would not survive the string
        let plain = |p: &Path| {
            p.to_str().is_some() && !p.as_os_str().as_bytes().iter().any(|b| b"\\,:".contains(b))
        };
        let paths_plain = m.lowers.iter().all(|l| plain(l)) && plain(&self.dir(id));
        // past a page (or the kernel's stack), `get` mounts it, or says why it cannot
        match (paths_plain, m.legacy_options(), m.options()) {
            (true, Ok(_), Ok(options)) => Ok(Some(MountSpec {
                fs_type: "overlay".into(),
                source: "overlay".into(),
                options,
            })),
            _ => Ok(None),
        }
    }

    fn make(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<BTreeMap<String, String>> {
        if id.as_str() == "l" {
            return Err(DriverError::InvalidId {
                id: id.to_string(),
                reason: "\"l\" is the directory of overlay2's short links",
            });
        }
        let quota = ProjectQuota::for_request(&self.quota, opts.size_limit, "overlay2")?;
        let dir = self.dir(id);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .ctx("create directory", &dir)?;
        // The project goes on the layer's directory before anything is made in it: diff and
        // work must share it, or xfs refuses overlay's copy-up renames between them (EXDEV).
        let project = match quota {
            Some((limit, q)) => Some(q.limit(&dir, limit)?),
            None => None,
        };
        let diff = self.diff(id);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&diff)
            .ctx("create directory", &diff)?;
        // the root a container sees is the upper directory's: it takes the parent's
        let (mode, uid, gid) = match parent {
            Some(p) => {
                let md = std::fs::metadata(self.diff(p)).ctx("stat", self.diff(p))?;
                (md.mode() & 0o7777, md.uid(), md.gid())
            }
            None => (0o755, 0, 0),
        };
        rustix::fs::chown(
            &diff,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .ctx("change owner of", &diff)?;
        rustix::fs::chmod(&diff, rustix::fs::Mode::from_raw_mode(mode))
            .ctx("change mode of", &diff)?;
        for d in ["work", "merged"] {
            let p = dir.join(d);
            std::fs::create_dir(&p).ctx("create directory", &p)?;
        }
        let name = short_link::random_name().ctx("make a short link name for", &dir)?;
        graphdriver_kit::store::write_atomic(&dir.join("link"), name.as_bytes())?;
        let link = self.home.join("l").join(&name);
        std::os::unix::fs::symlink(format!("../{id}/diff"), &link)
            .ctx("create short link", &link)?;
        let mut facts = BTreeMap::from([("diff".to_owned(), diff.display().to_string())]);
        if let Some(p) = project {
            facts.insert("project_id".into(), p.to_string());
        }
        Ok(facts)
    }

    fn destroy(&self, id: &LayerId) -> Result<()> {
        let dir = self.dir(id);
        if dir.join("merged").exists() {
            let _ = rmount::unmount(dir.join("merged"), UnmountFlags::DETACH);
        }
        if let Some(name) = self.short_name(id) {
            let _ = std::fs::remove_file(self.home.join("l").join(name));
        }
        tree::remove_via_trash(&dir, &self.home.join("trash"), id.as_str())
    }

    fn mount_point(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("merged")
    }

    fn mount(
        &self,
        id: &LayerId,
        ancestors: &[LayerId],
        read_only: bool,
        idmap: Option<&graphdriver_kit::idmap::UserNs>,
    ) -> Result<()> {
        let target = self.mount_point(id);
        match std::fs::create_dir(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).ctx("create mount point", &target),
        }
        if ancestors.is_empty() {
            // a layer without parent is its own directory: a bind mount shows it (the store
            // idmaps a copy of it, see `idmaps_layers`)
            rmount::mount_bind(self.diff(id), &target).ctx("bind mount layer at", &target)?;
            if read_only {
                if let Err(e) = rmount::mount_remount(
                    &target,
                    rmount::MountFlags::BIND | rmount::MountFlags::RDONLY,
                    "",
                ) {
                    let _ = rmount::unmount(&target, UnmountFlags::DETACH);
                    return Err(e).ctx("make read-only", &target);
                }
            }
        } else {
            let mut lowers = Vec::with_capacity(ancestors.len() + 1);
            if read_only {
                lowers.push(self.lowers(std::slice::from_ref(id))?.remove(0));
            }
            lowers.extend(self.lowers(ancestors)?);
            let rel = |p: &str| match self.api {
                MountApi::New => self.dir(id).join(p),
                MountApi::Legacy => Path::new(id.as_str()).join(p),
            };
            let m = OverlayMount {
                lowers,
                upper: (!read_only).then(|| (rel("diff"), rel("work"))),
                userxattr: self.xattrs == OverlayXattrs::User,
            };
            m.check_stack().map_err(|reason| {
                DriverError::Backend(Box::new(OverlayError::TooDeep {
                    id: id.clone(),
                    reason,
                }))
            })?;
            if self.api == MountApi::Legacy {
                if let Err(reason) = m.legacy_options() {
                    return Err(DriverError::Backend(Box::new(OverlayError::TooDeep {
                        id: id.clone(),
                        reason,
                    })));
                }
            }
            let mapped = match idmap {
                None => None,
                Some(_) if self.api == MountApi::Legacy => {
                    return Err(DriverError::Unsupported {
                        driver: "overlay2",
                        reason: "idmapped layers need the new mount API (Linux 6.13 takes \
                                 overlay layers as idmapped mounts)"
                            .into(),
                    })
                }
                Some(ns) => Some(idmapped_layers(
                    &m,
                    &self.home,
                    &self.home.join(".idmap"),
                    ns,
                )?),
            };
            match mount_overlay(
                &m,
                &target,
                read_only,
                self.api,
                &self.home,
                mapped.as_ref(),
            ) {
                Ok(()) => {}
                Err(e) if mapped.is_some() && e.kind() == std::io::ErrorKind::Unsupported => {
                    return Err(DriverError::Unsupported {
                        driver: "overlay2",
                        reason: format!(
                            "this kernel's overlayfs refused idmapped layers ({e}): it takes \
                             them as file descriptors from Linux 6.13"
                        ),
                    })
                }
                Err(e) => return Err(e).ctx("mount overlay at", &target),
            }
        }
        // private: the mount must not propagate into other namespaces (a new mount under a
        // mount that is not shared is not shared already; spare the syscall then)
        if self.shared_parent {
            if let Err(e) = rmount::mount_change(&target, MountPropagationFlags::PRIVATE) {
                let _ = rmount::unmount(&target, UnmountFlags::DETACH);
                return Err(e).ctx("make mount private", &target);
            }
        }
        Ok(())
    }

    fn unmount(&self, id: &LayerId) -> Result<()> {
        layer_mount::unmount_and_remove(&self.mount_point(id))
    }

    /// An overlay cannot be idmapped, only its layers: each lower and the upper directory
    /// are idmapped mounts. A layer without parent is a bind mount the store idmaps.
    fn idmaps_layers(&self, ancestors: &[LayerId]) -> bool {
        !ancestors.is_empty()
    }

    fn is_mounted(&self, id: &LayerId, mounts: &MountTable) -> bool {
        mounts.contains(&self.mount_point(id))
    }

    fn apply_target(&self, id: &LayerId, ancestors: &[LayerId]) -> Result<ApplyTarget> {
        Ok(ApplyTarget {
            dir: self.diff(id),
            // inside the layer's directory: in its xfs project, on the same mount as diff
            staging_parent: self.dir(id),
            lowers: ancestors.iter().map(|a| self.diff(a)).collect(),
            overlay_xattrs: self.xattrs,
        })
    }

    fn tracks_stored_ids(&self) -> bool {
        true
    }

    fn stored_ids(&self) -> Result<Vec<LayerId>> {
        tree::layer_ids_in(&self.home, |p| p.join("diff").is_dir())
    }

    fn status(&self) -> Status {
        vec![
            ("Backing Filesystem".into(), self.fs.into()),
            ("Supports d_type".into(), "true".into()),
            ("Native Overlay Diff".into(), "true".into()),
            (
                "Overlay Xattrs".into(),
                match self.xattrs {
                    OverlayXattrs::Trusted => "trusted.overlay.*".into(),
                    OverlayXattrs::User => "user.overlay.* (userxattr: rootless)".into(),
                },
            ),
            (
                "Mount API".into(),
                match self.api {
                    MountApi::New => format!("new (fsconfig lowerdir+, up to {MAX_LOWERS} layers)"),
                    MountApi::Legacy => {
                        "legacy mount(2) with l/ short links (one page of options)".into()
                    }
                },
            ),
            (
                "Size Limits".into(),
                match &self.quota {
                    Ok(_) => "xfs project quota".into(),
                    Err(reason) => format!("unsupported: {reason}"),
                },
            ),
        ]
    }

    fn native_diff_root(&self, id: &LayerId) -> Option<PathBuf> {
        Some(self.diff(id))
    }

    fn native_changes(
        &self,
        store: &LayerStore<Self>,
        id: &LayerId,
        parent: &LayerId,
    ) -> Option<Result<Vec<Change>>> {
        Some((|| {
            let view = store.get(parent, &MountOpts::default())?;
            let r = NaiveDiff::upper_changes(&self.diff(id), &view, self.xattrs);
            store.put(parent)?;
            r
        })())
    }
}
