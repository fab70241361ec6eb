//! The loopback pool's backing: sparse data and metadata files attached to loop devices that
//! detach themselves when the pool lets go of them (for tests and demos, like docker's
//! loop-lvm; give a real pool with `dm.thinpooldev` otherwise).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use graphdriver_api::{IoContext, Result};
use rustix::fs::{Mode, OFlags};

use crate::sys;

/// A loop device attached to a file, held open.
#[derive(Debug)]
pub struct LoopDevice {
    /// The open device (the loop detaches at its last close once something else let go).
    fd: OwnedFd,
    /// `major:minor`.
    pub major_minor: String,
}

impl LoopDevice {
    /// Closes our handle: the loop device stays while the pool holds it.
    pub fn close(self) {
        drop(self.fd);
    }
}

/// Makes `path` a sparse file of `size` bytes if it does not exist; with `zero_head`, its
/// first 4 KiB are zeroes (a new thin-pool metadata device must start so). Returns whether
/// it was made.
pub fn make_sparse_file(path: &Path, size: u64, zero_head: bool) -> Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let tmp = path.with_extension("new");
    let f = std::fs::File::create(&tmp).ctx("create", &tmp)?;
    f.set_len(size).ctx("size", &tmp)?;
    if zero_head {
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[0u8; 4096], 0)
            .ctx("zero the head of", &tmp)?;
    }
    f.sync_all().ctx("flush", &tmp)?;
    std::fs::rename(&tmp, path).ctx("rename into place", path)?;
    Ok(true)
}

/// Attaches `file` to a free loop device with autoclear.
pub fn attach(file: &Path) -> Result<LoopDevice> {
    let control_path = Path::new("/dev/loop-control");
    let control = rustix::fs::open(control_path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .ctx("open", control_path)?;
    let backing =
        rustix::fs::open(file, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).ctx("open", file)?;
    // Loop devices are shared with other processes: one may take "our" free device first.
    let mut last = None;
    for _ in 0..20 {
        let n =
            sys::loop_ctl_get_free(control.as_fd()).ctx("find a free loop device", control_path)?;
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let fd = match rustix::fs::open(&dev, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                last = Some((dev, std::io::Error::from(e)));
                continue;
            }
        };
        match sys::loop_configure(fd.as_fd(), backing.as_fd(), sys::LO_FLAGS_AUTOCLEAR) {
            Ok(()) => {
                let st = rustix::fs::fstat(&fd).ctx("stat", &dev)?;
                let rdev = st.st_rdev;
                return Ok(LoopDevice {
                    fd,
                    major_minor: format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev)),
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some((dev, e)),
            Err(e) => return Err(e).ctx("attach a loop device to", file),
        }
    }
    let (dev, e) = last.unwrap_or_else(|| {
        (
            control_path.to_owned(),
            std::io::Error::from_raw_os_error(libc::EBUSY),
        )
    });
    Err(e).ctx("attach a loop device to", dev)
}
