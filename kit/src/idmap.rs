//! Idmapped mounts: a user namespace made for an [`IdMap`] (the contract's value), and a
//! layer's tree attached through it. See mount_setattr(2), `MOUNT_ATTR_IDMAP`, and the
//! contract's `idmap` for what a mapping is.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::mount::{self as rmount, OpenTreeFlags};

pub use graphdriver_api::idmap::{IdMap, IdRange, MAX_RANGES};

use crate::{DriverError, IoContext, Result};

/// `/proc/PID/uid_map` text of `ranges`.
fn proc_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

/// A user namespace with an [`IdMap`], held by an fd: what `mount_setattr` idmaps a mount
/// with, and what a process can `setns` into. No process stays in it.
#[derive(Debug)]
pub struct UserNs {
    fd: OwnedFd,
    map: IdMap,
}

impl UserNs {
    /// Makes a user namespace with `map`: a forked child unshares one and waits while this
    /// process writes its maps and opens it, then is killed and reaped. Costs about one fork.
    pub fn new(map: &IdMap) -> Result<UserNs> {
        map.validate()?;
        let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .ctx("make a pipe", Path::new("pipe"))?;
        let pid = crate::sys::fork_into_user_namespace(ready_w)
            .ctx("fork a user namespace child", Path::new("/proc/self"))?;
        let proc = Path::new("/proc").join(pid.to_string());
        let made = (|| {
            let mut r = [0u8];
            File::from(ready_r)
                .read_exact(&mut r)
                .ctx("wait for the user namespace child", &proc)?;
            if r[0] != 0 {
                let e = std::io::Error::from_raw_os_error(i32::from(r[0]));
                return Err(DriverError::Unsupported {
                    driver: "idmap",
                    reason: format!(
                        "this process may not make a user namespace ({e}): {}",
                        match i32::from(r[0]) {
                            libc::EPERM =>
                                "a chrooted process may not, nor one past the \
                                            nesting limit of 32",
                            libc::ENOSPC => "user.max_user_namespaces is reached",
                            _ => "unshare(CLONE_NEWUSER) failed",
                        }
                    ),
                });
            }
            for (file, ranges) in [("uid_map", &map.uids), ("gid_map", &map.gids)] {
                let path = proc.join(file);
                match std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|mut f| f.write_all(proc_text(ranges).as_bytes()))
                {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        return Err(DriverError::Unsupported {
                            driver: "idmap",
                            reason: format!(
                                "this process may not map {map} ({e}): the host ids must be \
                                 ids of its own user namespace, and it must hold CAP_SETUID \
                                 and CAP_SETGID there"
                            ),
                        })
                    }
                    Err(e) => return Err(e).ctx("write the id map", &path),
                }
            }
            let ns = proc.join("ns/user");
            File::open(&ns)
                .map(|f| UserNs {
                    fd: f.into(),
                    map: map.clone(),
                })
                .ctx("open the user namespace", &ns)
        })();
        // the child only waits: kill and reap it whatever happened
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).expect("fork returned a positive pid"),
            rustix::process::Signal::KILL,
        );
        let _ = rustix::process::waitpid(
            rustix::process::Pid::from_raw(pid),
            rustix::process::WaitOptions::empty(),
        );
        made
    }
}

impl UserNs {
    /// Its map.
    pub fn map(&self) -> &IdMap {
        &self.map
    }

    /// Runs `cmd` as this namespace's root (uid and gid 0 inside it, the map's host ids for
    /// them outside) and waits for its output: how a test, or a runtime without one of its
    /// own, puts a process in the namespace.
    pub fn run_as_root(
        &self,
        cmd: &mut std::process::Command,
    ) -> std::io::Result<std::process::Output> {
        crate::sys::join_user_namespace_on_exec(cmd, std::os::fd::AsRawFd::as_raw_fd(&self.fd));
        cmd.output()
    }
}

impl AsFd for UserNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A detached copy of the mount at `path` (a bind of that directory when it is not a mount's
/// root) that shows ids through `ns`: the fd can be attached with `move_mount` or given to
/// overlayfs as a layer. `Unsupported` when the filesystem cannot be idmapped.
pub fn idmapped_tree(path: &Path, ns: &UserNs) -> Result<OwnedFd> {
    let tree = rmount::open_tree(
        rustix::fs::CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .ctx("clone the mount of", path)?;
    match crate::sys::mount_setattr_idmap(tree.as_fd(), ns.as_fd()) {
        Ok(()) => Ok(tree),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
            Err(DriverError::Unsupported {
                driver: "idmap",
                reason: format!(
                    "the filesystem of {} cannot be idmapped ({e}): idmapped mounts need \
                     Linux 5.12 and a filesystem that allows them (ext4, xfs, btrfs, tmpfs; \
                     zfs from 2.2)",
                    path.display()
                ),
            })
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(DriverError::Unsupported {
            driver: "idmap",
            reason: format!(
                "idmapping the mount of {} needs CAP_SYS_ADMIN in the user namespace its \
                 filesystem was mounted in ({e}): an unprivileged user cannot idmap the host's \
                 filesystems",
                path.display()
            ),
        }),
        Err(e) => Err(e).ctx("idmap the mount of", path),
    }
}

/// Attaches an idmapped copy of the mount at `src` (see [`idmapped_tree`]) at `at`, an
/// existing directory.
pub fn attach_idmapped(src: &Path, at: &Path, ns: &UserNs) -> Result<()> {
    let tree = idmapped_tree(src, ns)?;
    rmount::move_mount(
        tree.as_fd(),
        "",
        rustix::fs::CWD,
        at,
        rmount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .ctx("attach the idmapped mount at", at)
}
