//! The filesystem on the thin devices: made once on the base device (every layer is a
//! snapshot of it), mounted per layer, grown in place for a layer bigger than the base.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;

use graphdriver_api::{DriverError, IoContext, Result};
use rustix::mount::{MountFlags, UnmountFlags};

use crate::error::DevmapperError;
use crate::sectors::Bytes;
use crate::sys;

/// The filesystems a base device may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    /// ext4 (the default).
    Ext4,
    /// xfs, mounted `nouuid` (every snapshot has its origin's UUID).
    Xfs,
}

impl Fs {
    /// `ext4` or `xfs`, as `mount` and the options name it.
    pub fn name(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4",
            Fs::Xfs => "xfs",
        }
    }

    /// From the `dm.fs` option's value.
    pub fn parse(s: &str) -> Option<Fs> {
        match s {
            "ext4" => Some(Fs::Ext4),
            "xfs" => Some(Fs::Xfs),
            _ => None,
        }
    }

    /// Mount data: ext4 never starts its inode-table zeroing thread (the tables were made
    /// lazily, and zeroing would allocate every layer's blocks); xfs takes snapshots'
    /// duplicate UUIDs.
    pub fn mount_data(self) -> &'static std::ffi::CStr {
        match self {
            Fs::Ext4 => c"noinit_itable",
            Fs::Xfs => c"nouuid",
        }
    }

    /// Makes the filesystem on `dev`: no discard (the device is fresh), lazy tables and
    /// journal (no block of the pool is spent on zeroes).
    pub fn make(self, dev: &Path) -> Result<()> {
        let mut cmd = match self {
            Fs::Ext4 => {
                let mut c = Command::new("mkfs.ext4");
                c.args([
                    "-q",
                    "-F",
                    "-E",
                    "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
                ]);
                c
            }
            Fs::Xfs => {
                let mut c = Command::new("mkfs.xfs");
                c.args(["-q", "-f", "-K"]);
                c
            }
        };
        cmd.arg(dev);
        let out = cmd.output().ctx("run mkfs on", dev)?;
        if !out.status.success() {
            return Err(DevmapperError::Program {
                program: format!("{cmd:?}"),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            }
            .into());
        }
        Ok(())
    }

    /// Mounts `dev` at `at`.
    ///
    /// A read-only mount of a filesystem that is still mounted read-write elsewhere (a
    /// client's bind mount of a layer, kept after the layer got a child: containerd's own
    /// snapshotter suite does that) is refused by the kernel with `EBUSY`, which will not
    /// change a superblock's read-only state under a mount. Then the filesystem is mounted as
    /// it is and this one mount made read-only.
    pub fn mount(self, dev: &Path, at: &Path, read_only: bool) -> Result<()> {
        let mut flags = MountFlags::NOATIME;
        if read_only {
            flags |= MountFlags::RDONLY;
        }
        let data = Some(self.mount_data());
        match rustix::mount::mount(dev, at, self.name(), flags, data) {
            Err(rustix::io::Errno::BUSY) if read_only => {
                rustix::mount::mount(dev, at, self.name(), MountFlags::NOATIME, data)
                    .ctx("mount thin device at", at)?;
                let flags = MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOATIME;
                if let Err(e) = rustix::mount::mount_remount(at, flags, c"") {
                    let error = DriverError::io("make read-only the mount at", at, e);
                    // never leave a read-write mount where a read-only one was asked for
                    return Err(match rustix::mount::unmount(at, UnmountFlags::DETACH) {
                        Ok(()) => error,
                        Err(u) => DriverError::RollbackFailed {
                            error: Box::new(error),
                            rollback: Box::new(DriverError::io("unmount", at, u)),
                        },
                    });
                }
            }
            r => r.ctx("mount thin device at", at)?,
        }
        // private: the mount must not propagate into other namespaces
        rustix::mount::mount_change(at, rustix::mount::MountPropagationFlags::PRIVATE)
            .ctx("make private the mount at", at)
    }

    /// Grows the filesystem mounted at `dir` to fill `size`.
    pub fn grow(self, dir: &Path, size: Bytes) -> Result<()> {
        let fd = graphdriver_kit::fs::tree::open_dir(dir)?;
        let st = rustix::fs::fstatvfs(&fd).ctx("statfs", dir)?;
        let block = st.f_bsize.max(512);
        let blocks = size.0 / block;
        match self {
            Fs::Ext4 => sys::ext4_ioc_resize_fs(fd.as_fd(), blocks).ctx("grow ext4 at", dir),
            // 25: mkfs.xfs's default share of space for inodes below 1 TiB
            Fs::Xfs => sys::xfs_ioc_fsgrowfsdata(fd.as_fd(), blocks, 25).ctx("grow xfs at", dir),
        }
    }
}

/// Unmounts `at`, detaching (a copy held in another namespace must not make this fail).
pub fn unmount(at: &Path) -> Result<()> {
    match rustix::mount::unmount(at, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(DriverError::io("unmount", at, e)),
    }
}
