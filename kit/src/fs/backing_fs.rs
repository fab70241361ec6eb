//! What filesystem a driver root lives on.

use std::path::Path;

use rustix::fs::statfs;

use crate::{IoContext, Result};

/// The filesystem under a path, from `statfs(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackingFs {
    /// The filesystem magic number (`f_type`).
    pub magic: i64,
    /// Free bytes for unprivileged users.
    pub available: u64,
    /// Total bytes.
    pub total: u64,
}

impl BackingFs {
    /// `statfs` of `path`.
    pub fn of(path: &Path) -> Result<BackingFs> {
        let s = statfs(path).ctx("statfs", path)?;
        Ok(BackingFs {
            magic: s.f_type as i64,
            available: s.f_bavail * s.f_bsize as u64,
            total: s.f_blocks * s.f_bsize as u64,
        })
    }

    /// A short name for the filesystem, as `docker info` prints it.
    pub fn name(&self) -> &'static str {
        match self.magic {
            0xEF53 => "extfs",
            0x5846_5342 => "xfs",
            0x9123_683E => "btrfs",
            0x0102_1994 => "tmpfs",
            0x794C_7630 => "overlayfs",
            0x2FC1_2FC1 => "zfs",
            0x6573_5546 => "fuse",
            0x5346_544E => "ntfs",
            0xF2F5_2010 => "f2fs",
            _ => "unknown",
        }
    }

    /// Whether this is xfs.
    pub fn is_xfs(&self) -> bool {
        self.magic == 0x5846_5342
    }

    /// Whether this is btrfs.
    pub fn is_btrfs(&self) -> bool {
        self.magic == 0x9123_683E
    }
}
