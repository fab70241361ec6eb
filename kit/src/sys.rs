//! Raw system calls that have no safe wrapper in rustix: xfs project ids and quota limits.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

/// `struct fsxattr` from `<linux/fs.h>`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct FsXattr {
    pub xflags: u32,
    pub extsize: u32,
    pub nextents: u32,
    pub projid: u32,
    pub cowextsize: u32,
    pub pad: [u8; 8],
}

/// `FS_XFLAG_PROJINHERIT`: new entries of a directory take its project id.
pub const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;

/// `ioctl(fd, FS_IOC_FSGETXATTR, &fsx)`. See ioctl_xfs_fsgetxattr(2).
pub fn fs_ioc_fsgetxattr(fd: BorrowedFd<'_>) -> std::io::Result<FsXattr> {
    let mut x = FsXattr::default();
    // SAFETY: the fd is valid for the call, and `x` is a writable struct of the size and
    // layout the kernel's struct fsxattr has (28 bytes, checked by a test).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x as *mut FsXattr) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(x)
}

/// `ioctl(fd, FS_IOC_FSSETXATTR, &fsx)`. See ioctl_xfs_fsgetxattr(2).
pub fn fs_ioc_fssetxattr(fd: BorrowedFd<'_>, x: &FsXattr) -> std::io::Result<()> {
    // SAFETY: the fd is valid for the call, and `x` points to a struct with the layout of the
    // kernel's struct fsxattr, which it only reads.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR, x as *const FsXattr) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `struct fs_disk_quota` from `<linux/dqblk_xfs.h>`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct FsDiskQuota {
    pub version: i8,
    pub flags: i8,
    pub fieldmask: u16,
    pub id: u32,
    pub blk_hardlimit: u64,
    pub blk_softlimit: u64,
    pub ino_hardlimit: u64,
    pub ino_softlimit: u64,
    pub bcount: u64,
    pub icount: u64,
    pub itimer: i32,
    pub btimer: i32,
    pub iwarns: u16,
    pub bwarns: u16,
    pub itimer_hi: i8,
    pub btimer_hi: i8,
    pub rtbtimer_hi: i8,
    pub padding2: i8,
    pub rtb_hardlimit: u64,
    pub rtb_softlimit: u64,
    pub rtbcount: u64,
    pub rtbtimer: i32,
    pub rtbwarns: u16,
    pub padding3: i16,
    pub padding4: [u8; 8],
}

pub const FS_DQUOT_VERSION: i8 = 1;
pub const FS_PROJ_QUOTA: i8 = 2;
pub const FS_DQ_BSOFT: u16 = 1 << 2;
pub const FS_DQ_BHARD: u16 = 1 << 3;
const PRJQUOTA: u32 = 2;
pub const Q_XGETQUOTA: u32 = (b'X' as u32) << 8 | 3;
pub const Q_XSETQLIM: u32 = (b'X' as u32) << 8 | 4;

/// `quotactl_fd(fd, QCMD(cmd, PRJQUOTA), id, dq)`. See quotactl(2); Linux 5.14 and later.
pub fn quotactl_fd_project(
    fd: BorrowedFd<'_>,
    cmd: u32,
    id: u32,
    dq: &mut FsDiskQuota,
) -> std::io::Result<()> {
    let qcmd = (cmd << 8) | (PRJQUOTA & 0xff);
    // SAFETY: the fd is valid for the call; `dq` is a struct with the layout of the kernel's
    // struct fs_disk_quota (112 bytes, checked by a test), readable and writable.
    let r = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            fd.as_raw_fd(),
            qcmd,
            id,
            dq as *mut FsDiskQuota,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_match_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<FsDiskQuota>(), 112);
    }
}

/// `MOUNT_ATTR_IDMAP` from `<linux/mount.h>`.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` from `<linux/mount.h>` (`MOUNT_ATTR_SIZE_VER0`, 32 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const _: () = assert!(std::mem::size_of::<MountAttr>() == 32);

/// `mount_setattr(tree, "", AT_EMPTY_PATH, {attr_set: MOUNT_ATTR_IDMAP, userns_fd})`: makes
/// the detached mount `tree` (from `open_tree(OPEN_TREE_CLONE)`) show ids through `userns`'s
/// mapping. See mount_setattr(2).
pub fn mount_setattr_idmap(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        userns_fd: userns.as_raw_fd() as u64,
        ..MountAttr::default()
    };
    // SAFETY: both fds are valid for the call; the path is a NUL-terminated empty string, and
    // `attr` is a struct of the kernel's layout whose size is passed with it, read only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Forks a child that unshares a user namespace and then waits to be killed; returns its
/// pid. The child writes one byte to `ready`: `0` once it is in the new namespace, else the
/// errno of its `unshare`. The caller kills and reaps it.
pub fn fork_into_user_namespace(ready: std::os::fd::OwnedFd) -> std::io::Result<libc::pid_t> {
    let ready_fd = ready.as_raw_fd();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: between fork and its end the child calls only async-signal-safe system calls
    // (prctl, getppid, close_range, unshare, write, pause, _exit) and touches no memory the
    // parent's other threads could have left inconsistent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: as above; the byte is on this stack. The child dies with the thread that
        // forked it, and first closes every inherited fd but `ready`: a copy of a lock
        // another thread holds (a layer's flock) must not outlive the parent in it.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            if ready_fd > 0 {
                libc::syscall(libc::SYS_close_range, 0u32, (ready_fd - 1) as u32, 0u32);
            }
            libc::syscall(libc::SYS_close_range, (ready_fd + 1) as u32, u32::MAX, 0u32);
            // 0 once in the new namespace, else unshare's errno (all fit in a byte)
            let r: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                0
            } else {
                *libc::__errno_location() as u8
            };
            libc::write(ready_fd, (&r as *const u8).cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    // the parent's copy of the write end closes here
    drop(ready);
    Ok(pid)
}

/// Makes `cmd`'s child join user namespace `ns` before it runs, as that namespace's root
/// (`setns`, no supplementary groups, gid and uid 0 inside). `ns` must stay open until the
/// command is spawned.
pub fn join_user_namespace_on_exec(cmd: &mut std::process::Command, ns: std::os::fd::RawFd) {
    use std::os::unix::process::CommandExt;
    let step = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe system calls, allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            step(libc::setns(ns, libc::CLONE_NEWUSER))?;
            step(libc::setgroups(0, std::ptr::null()))?;
            step(libc::setresgid(0, 0, 0))?;
            step(libc::setresuid(0, 0, 0))
        });
    }
}
