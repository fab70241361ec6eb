//! The kernel's mount table, as this process sees it (`/proc/self/mountinfo`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::{IoContext, Result};

/// The mount points of this process's mount namespace.
#[derive(Debug, Default, Clone)]
pub struct MountTable {
    points: HashSet<PathBuf>,
}

impl MountTable {
    /// Reads `/proc/self/mountinfo`.
    pub fn read() -> Result<MountTable> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).ctx("read", path)?;
        Ok(MountTable::parse(&text))
    }

    /// Parses mountinfo text: the fifth field of each line is the mount point, with spaces,
    /// tabs, newlines and backslashes escaped in octal.
    pub fn parse(text: &str) -> MountTable {
        let points = text
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(|p| PathBuf::from(unescape(p)))
            .collect();
        MountTable { points }
    }

    /// Whether something is mounted at `path`.
    pub fn contains(&self, path: &Path) -> bool {
        self.points.contains(path)
    }

    /// Every mount point at or below `dir`.
    pub fn below<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = &'a Path> + 'a {
        self.points
            .iter()
            .map(PathBuf::as_path)
            .filter(move |p| p.starts_with(dir))
    }
}

fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escaped_mount_points() {
        let t = MountTable::parse(
            "22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n\
             40 22 0:35 / /var/lib/a\\040b rw - overlay overlay rw,lowerdir=x\n",
        );
        assert!(t.contains(Path::new("/")));
        assert!(t.contains(Path::new("/var/lib/a b")));
        assert!(!t.contains(Path::new("/var/lib/a\\040b")));
        assert_eq!(t.below(Path::new("/var/lib")).count(), 1);
    }
}
