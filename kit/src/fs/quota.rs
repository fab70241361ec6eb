//! Size limits with xfs project quotas.
//!
//! A limited layer's directory gets its own project id (with `PROJINHERIT`, so everything
//! created below it is charged to the same project) and a hard block limit; writes past it
//! fail with `EDQUOT`. This needs the driver root on xfs mounted with `prjquota`; anywhere
//! else [`ProjectQuota::probe`] says why not, and drivers turn that into `Unsupported`.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::fs::atomic_file::write_durable;
use crate::sys::{self, FsDiskQuota};
use crate::tree::{self, open_dir};
use crate::{BackingFs, DriverError, IoContext, Result};

/// Project ids this library hands out start here, clear of ids an administrator picks by hand.
pub const FIRST_PROJECT_ID: u32 = 100_000;

/// Project quotas of one xfs filesystem.
#[derive(Debug, Clone)]
pub struct ProjectQuota {
    /// Where the last project id handed out is kept.
    counter: PathBuf,
}

impl ProjectQuota {
    /// Quotas for layers under `dir`, if its filesystem enforces project quotas; otherwise
    /// the reason it cannot. `counter` is a file the driver owns (its store lock held when
    /// ids are allocated).
    pub fn probe(
        dir: &Path,
        counter: PathBuf,
    ) -> Result<std::result::Result<ProjectQuota, String>> {
        let fs = BackingFs::of(dir)?;
        if !fs.is_xfs() {
            return Ok(Err(format!(
                "size limits need xfs project quotas, and {} is on {}",
                dir.display(),
                fs.name()
            )));
        }
        let opts = mount_options(dir)?;
        if !opts.split(',').any(|o| matches!(o, "prjquota" | "pquota")) {
            return Ok(Err(format!(
                "size limits need xfs mounted with -o prjquota; {} is mounted with {opts}",
                dir.display()
            )));
        }
        Ok(Ok(ProjectQuota { counter }))
    }

    /// What a create asking for `size_limit` gets from `quota` (a probe's outcome): nothing
    /// to do, the quota to set, or `Unsupported` with the probe's reason.
    pub fn for_request<'a>(
        quota: &'a std::result::Result<ProjectQuota, String>,
        size_limit: Option<u64>,
        driver: &'static str,
    ) -> Result<Option<(u64, &'a ProjectQuota)>> {
        match (size_limit, quota) {
            (None, _) => Ok(None),
            (Some(limit), Ok(q)) => Ok(Some((limit, q))),
            (Some(_), Err(reason)) => Err(DriverError::Unsupported {
                driver,
                reason: reason.clone(),
            }),
        }
    }

    fn next_id(&self) -> Result<u32> {
        let last = std::fs::read_to_string(&self.counter)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(FIRST_PROJECT_ID - 1);
        let id = last + 1;
        write_durable(&self.counter, id.to_string().as_bytes())?;
        Ok(id)
    }

    /// Gives `dir` (and everything already below it) a new project id limited to `bytes`;
    /// returns the id.
    pub fn limit(&self, dir: &Path, bytes: u64) -> Result<u32> {
        let id = self.next_id()?;
        let fd = open_dir(dir)?;
        let mut dq = FsDiskQuota {
            version: sys::FS_DQUOT_VERSION,
            flags: sys::FS_PROJ_QUOTA,
            fieldmask: sys::FS_DQ_BHARD | sys::FS_DQ_BSOFT,
            id,
            blk_hardlimit: bytes.div_ceil(512),
            blk_softlimit: bytes.div_ceil(512),
            ..FsDiskQuota::default()
        };
        sys::quotactl_fd_project(fd.as_fd(), sys::Q_XSETQLIM, id, &mut dq)
            .ctx("set project quota limit on", dir)?;
        set_project(fd.as_fd(), id, dir)?;
        Ok(id)
    }

    /// Bytes charged to project `id` on the filesystem of `dir`.
    pub fn usage(dir: &Path, id: u32) -> Result<u64> {
        let fd = open_dir(dir)?;
        let mut dq = FsDiskQuota::default();
        sys::quotactl_fd_project(fd.as_fd(), sys::Q_XGETQUOTA, id, &mut dq)
            .ctx("read project quota of", dir)?;
        Ok(dq.bcount * 512)
    }
}

/// Sets project `id` (and `PROJINHERIT` on directories) on `dir` and its entries.
fn set_project(dir: std::os::fd::BorrowedFd<'_>, id: u32, path: &Path) -> Result<()> {
    let mut x = sys::fs_ioc_fsgetxattr(dir).ctx("read project of", path)?;
    x.projid = id;
    x.xflags |= sys::FS_XFLAG_PROJINHERIT;
    sys::fs_ioc_fssetxattr(dir, &x).ctx("set project of", path)?;
    for name in tree::list_dir(dir).ctx("read directory", path)? {
        let child = path.join(std::ffi::OsStr::new(&*name.to_string_lossy()));
        let st = rustix::fs::statat(dir, &name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .ctx("stat", &child)?;
        match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::Directory => {
                let sub = tree::open_dir_at(dir, &name).ctx("open directory", &child)?;
                set_project(sub.as_fd(), id, &child)?;
            }
            rustix::fs::FileType::RegularFile => {
                let f = rustix::fs::openat(
                    dir,
                    &name,
                    rustix::fs::OFlags::RDONLY
                        | rustix::fs::OFlags::NOFOLLOW
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .ctx("open", &child)?;
                let mut x = sys::fs_ioc_fsgetxattr(f.as_fd()).ctx("read project of", &child)?;
                x.projid = id;
                sys::fs_ioc_fssetxattr(f.as_fd(), &x).ctx("set project of", &child)?;
            }
            _ => {} // symlinks and nodes hold no data blocks worth charging
        }
    }
    Ok(())
}

/// The super-block options of the mount that holds `dir`.
fn mount_options(dir: &Path) -> Result<String> {
    let dir = dir.canonicalize().ctx("resolve", dir)?;
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).ctx("read", path)?;
    let mut best: Option<(usize, String)> = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4) else { continue };
        let point = point.replace("\\040", " ");
        if !dir.starts_with(&point) {
            continue;
        }
        let sep = fields.iter().position(|f| *f == "-");
        let opts = sep
            .and_then(|s| fields.get(s + 3))
            .map(|s| s.to_string())
            .unwrap_or_default();
        let len = point.len();
        if best.as_ref().is_none_or(|(l, _)| len >= *l) {
            best = Some((len, opts));
        }
    }
    best.map(|(_, o)| o).ok_or_else(|| DriverError::Corrupt {
        path: path.to_owned(),
        reason: format!("no mount holds {}", dir.display()),
    })
}
