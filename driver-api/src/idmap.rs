//! User-namespace id mappings, and idmapped mounts made from them.
//!
//! A container in a user namespace runs as ids that the host sees shifted (its root is, say,
//! host uid 100000). An **idmapped mount** shows a layer's files through such a mapping: a
//! file stored as uid 0 appears as uid 100000 through the mount, so the container's root owns
//! it, and what the container writes through the mount is stored with the unmapped ids (uid
//! 0 again). The image's layers are shared by every mapping, and nothing is copied or
//! chowned. See mount_setattr(2), `MOUNT_ATTR_IDMAP`.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::str::FromStr;

use rustix::mount::{self as rmount, OpenTreeFlags};

use crate::{DriverError, IoContext, Result};

/// The most ranges a kernel id map takes (user_namespaces(7)).
pub const MAX_RANGES: usize = 340;

/// One range of an id map: ids `inside..inside+count` of the namespace are host ids
/// `outside..outside+count`, as a line of `/proc/PID/uid_map` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdRange {
    /// The first id inside the namespace.
    pub inside: u32,
    /// The host id it is.
    pub outside: u32,
    /// How many ids the range holds.
    pub count: u32,
}

impl IdRange {
    /// The host id of `inside`, if this range holds it.
    pub fn to_host(&self, inside: u32) -> Option<u32> {
        let off = inside.checked_sub(self.inside)?;
        (off < self.count).then(|| self.outside + off)
    }
}

/// The uid and gid maps of a user namespace: what a container's ids are on the host.
///
/// Text form (containerd's `containerd.io/snapshot/uidmapping` label, one per kind):
/// `inside:outside:count` ranges joined by commas, e.g. `0:100000:65536`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdMap {
    /// User ids.
    pub uids: Vec<IdRange>,
    /// Group ids.
    pub gids: Vec<IdRange>,
}

impl IdMap {
    /// The same ranges for uids and gids: `count` ids from `inside` are host ids from
    /// `outside`.
    pub fn single(inside: u32, outside: u32, count: u32) -> Result<IdMap> {
        let r = vec![IdRange {
            inside,
            outside,
            count,
        }];
        let m = IdMap {
            uids: r.clone(),
            gids: r,
        };
        m.validate()?;
        Ok(m)
    }

    /// Parses the two maps from their text forms and checks them.
    pub fn parse(uids: &str, gids: &str) -> Result<IdMap> {
        let m = IdMap {
            uids: parse_ranges(uids)?,
            gids: parse_ranges(gids)?,
        };
        m.validate()?;
        Ok(m)
    }

    /// Checks what the kernel would refuse, so a bad map is refused before anything is
    /// mounted: 1 to [`MAX_RANGES`] ranges per kind, none empty, none past `u32::MAX`, and no
    /// two overlapping inside or outside.
    pub fn validate(&self) -> Result<()> {
        for (kind, ranges) in [("uid", &self.uids), ("gid", &self.gids)] {
            let bad = |reason: String| DriverError::InvalidIdMap {
                map: self.to_string(),
                reason: format!("{kind} map: {reason}"),
            };
            if ranges.is_empty() || ranges.len() > MAX_RANGES {
                return Err(bad(format!(
                    "needs 1 to {MAX_RANGES} ranges, has {}",
                    ranges.len()
                )));
            }
            for r in ranges {
                if r.count == 0 {
                    return Err(bad("a range of 0 ids".into()));
                }
                if r.inside.checked_add(r.count - 1).is_none()
                    || r.outside.checked_add(r.count - 1).is_none()
                {
                    return Err(bad(format!(
                        "{}:{}:{} runs past the last id",
                        r.inside, r.outside, r.count
                    )));
                }
            }
            for side in [|r: &IdRange| r.inside, |r: &IdRange| r.outside] {
                let mut v: Vec<(u32, u32)> = ranges.iter().map(|r| (side(r), r.count)).collect();
                v.sort_unstable();
                if v.windows(2)
                    .any(|w| u64::from(w[0].0) + u64::from(w[0].1) > u64::from(w[1].0))
                {
                    return Err(bad("two ranges overlap".into()));
                }
            }
        }
        Ok(())
    }

    /// The host uid of namespace uid `inside`, if mapped.
    pub fn host_uid(&self, inside: u32) -> Option<u32> {
        self.uids.iter().find_map(|r| r.to_host(inside))
    }

    /// The host gid of namespace gid `inside`, if mapped.
    pub fn host_gid(&self, inside: u32) -> Option<u32> {
        self.gids.iter().find_map(|r| r.to_host(inside))
    }

    fn proc_text(ranges: &[IdRange]) -> String {
        ranges
            .iter()
            .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
            .collect()
    }
}

fn ranges_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{}:{}:{}", r.inside, r.outside, r.count))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_ranges(text: &str) -> Result<Vec<IdRange>> {
    let bad = |reason: &str| DriverError::InvalidIdMap {
        map: text.to_owned(),
        reason: reason.to_owned(),
    };
    if text.trim().is_empty() {
        return Err(bad("empty"));
    }
    text.split(',')
        .map(|part| {
            let n: Vec<u32> = part
                .trim()
                .split(':')
                .map(|x| x.parse::<u32>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad("a range is not inside:outside:count in decimal"))?;
            match n[..] {
                [inside, outside, count] => Ok(IdRange {
                    inside,
                    outside,
                    count,
                }),
                _ => Err(bad("a range is not inside:outside:count")),
            }
        })
        .collect()
}

impl fmt::Display for IdMap {
    /// `uids=0:100000:65536 gids=0:100000:65536`: the form mount records keep.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uids={} gids={}",
            ranges_text(&self.uids),
            ranges_text(&self.gids)
        )
    }
}

impl FromStr for IdMap {
    type Err = DriverError;

    /// Reads what [`Display`](fmt::Display) wrote.
    fn from_str(s: &str) -> Result<IdMap> {
        let mut parts = s.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(u), Some(g), None) if u.starts_with("uids=") && g.starts_with("gids=") => {
                IdMap::parse(&u[5..], &g[5..])
            }
            _ => Err(DriverError::InvalidIdMap {
                map: s.to_owned(),
                reason: "not \"uids=RANGES gids=RANGES\"".into(),
            }),
        }
    }
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
                    .and_then(|mut f| f.write_all(IdMap::proc_text(ranges).as_bytes()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_parse_print_and_read_back() {
        let m = IdMap::parse("0:100000:65536", "0:200000:1000,1000:300000:1").unwrap();
        assert_eq!(m.host_uid(0), Some(100000));
        assert_eq!(m.host_uid(65535), Some(165535));
        assert_eq!(m.host_uid(65536), None);
        assert_eq!(m.host_gid(1000), Some(300000));
        assert_eq!(m.host_gid(999), Some(200999));
        let text = m.to_string();
        assert_eq!(text, "uids=0:100000:65536 gids=0:200000:1000,1000:300000:1");
        assert_eq!(text.parse::<IdMap>().unwrap(), m);
    }

    #[test]
    fn maps_the_kernel_would_refuse_are_refused_by_name() {
        for (u, why) in [
            ("", "empty"),
            ("0:1", "inside:outside:count"),
            ("0:x:1", "decimal"),
            ("0:100000:0", "0 ids"),
            ("4294967295:0:2", "past the last id"),
            ("0:100000:10,5:200000:10", "overlap"),
            ("0:100000:10,20:100005:10", "overlap"),
        ] {
            let e = IdMap::parse(u, "0:1:1").unwrap_err();
            assert!(
                matches!(&e, DriverError::InvalidIdMap { reason, .. } if reason.contains(why)),
                "{u:?}: {e}"
            );
        }
        let many = (0..=MAX_RANGES as u32)
            .map(|i| format!("{i}:{}:1", 1000 + i))
            .collect::<Vec<_>>()
            .join(",");
        assert!(IdMap::parse(&many, "0:1:1").is_err());
        assert!("uids=0:1:1".parse::<IdMap>().is_err());
    }
}
