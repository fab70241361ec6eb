//! Small files replaced atomically: write a temporary, fsync, rename over.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::{IoContext, Result};

/// Replaces `path` with `data` so that a reader (or a process crash) sees the old or the new
/// content, never a mix. Not flushed to disk: for state that a reboot voids anyway (mount
/// counts) or that recovery can rebuild (journal records, links).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_with(path, data, false)
}

/// Like [`write_atomic`], and on disk when it returns (the commit point of an operation).
pub fn write_durable(path: &Path, data: &[u8]) -> Result<()> {
    write_with(path, data, true)
}

fn write_with(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    // A name no other file of the directory can have: layer ids never begin with '.', and
    // the pid and counter keep concurrent writers of one file apart.
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let written = (|| {
        let mut f = File::create(&tmp).ctx("create", &tmp)?;
        f.write_all(data).ctx("write", &tmp)?;
        if durable {
            f.sync_data().ctx("sync", &tmp)?;
        }
        fs::rename(&tmp, path).ctx("rename into place", path)
    })();
    if written.is_err() {
        // a full disk must not also leave half a file behind
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Reads `path`, or `None` if it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx("read", path),
    }
}

/// Removes `path`; a missing file is not an error.
pub fn remove_optional(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("remove", path),
    }
}
