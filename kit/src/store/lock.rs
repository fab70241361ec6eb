//! Cross-process locks: `flock` on a file under the driver's home.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use crate::{IoContext, Result};

/// An exclusive `flock` held until dropped (the kernel releases it when the file closes, so a
/// crashed holder never leaves it locked).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// The exclusive lock on `path` if no one holds it, else `None`.
    pub fn try_exclusive(path: &Path) -> Result<Option<FileLock>> {
        let file = Self::open(path)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(FileLock { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e).ctx("lock", path),
        }
    }

    fn open(path: &Path) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .ctx("open lock file", path)
    }

    /// Blocks until the exclusive lock on `path` (created if absent) is held.
    pub fn exclusive(path: &Path) -> Result<FileLock> {
        let file = Self::open(path)?;
        loop {
            match flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(FileLock { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e).ctx("lock", path),
            }
        }
    }
}
