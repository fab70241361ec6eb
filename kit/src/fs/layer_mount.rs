//! Mount points of layers: bind mounts for backends whose layer is a directory, and the
//! unmount every backend does the same way.

use std::path::Path;

use rustix::mount::{self as rmount, MountFlags, MountPropagationFlags, UnmountFlags};

use crate::{IoContext, Result};

/// Makes `mnt` if it is missing.
pub fn make_mount_point(mnt: &Path) -> Result<()> {
    match std::fs::create_dir(mnt) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).ctx("create mount point", mnt),
    }
}

/// Bind-mounts `dir` at `mnt` (made if missing), private (it must not propagate into other
/// namespaces), and read-only when asked. Nothing stays mounted if a step fails.
pub fn bind(dir: &Path, mnt: &Path, read_only: bool) -> Result<()> {
    make_mount_point(mnt)?;
    rmount::mount_bind(dir, mnt).ctx("bind mount layer at", mnt)?;
    let finish = (|| {
        rmount::mount_change(mnt, MountPropagationFlags::PRIVATE)?;
        if read_only {
            rmount::mount_remount(mnt, MountFlags::BIND | MountFlags::RDONLY, "")?;
        }
        Ok::<_, rustix::io::Errno>(())
    })();
    if let Err(e) = finish {
        let _ = rmount::unmount(mnt, UnmountFlags::DETACH);
        return Err(e).ctx("set up mount at", mnt);
    }
    Ok(())
}

/// Detaches what is mounted at `mnt` (nothing is fine) and removes the mount point, so that
/// a copy of the mount held in another mount namespace pins nothing this driver will mount on
/// or remove again (it is made anew at the next mount).
pub fn unmount_and_remove(mnt: &Path) -> Result<()> {
    match rmount::unmount(mnt, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e).ctx("unmount", mnt),
    }
    match std::fs::remove_dir(mnt) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        // mounted again meanwhile in this namespace: leave it
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        Err(e) => Err(e).ctx("remove mount point", mnt),
    }
}
