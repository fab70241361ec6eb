//! The kernel's mount table, as this process sees it (`/proc/self/mountinfo`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::{IoContext, Result};

/// The mount points of this process's mount namespace.
#[derive(Debug, Default, Clone)]
pub struct MountTable {
    points: HashSet<PathBuf>,
    /// Mount points in a shared peer group (new mounts below them propagate).
    shared: HashSet<PathBuf>,
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
        let mut t = MountTable::default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(point) = fields.get(4).map(|p| PathBuf::from(unescape(p))) else {
                continue;
            };
            // optional fields run from the seventh to the "-" separator
            if fields
                .iter()
                .skip(6)
                .take_while(|f| **f != "-")
                .any(|f| f.starts_with("shared:"))
            {
                t.shared.insert(point.clone());
            }
            t.points.insert(point);
        }
        t
    }

    /// Whether new mounts made at or below `path` would propagate to peer mounts: the mount
    /// that holds `path` is shared.
    pub fn propagates_below(&self, path: &Path) -> bool {
        let holder = self
            .points
            .iter()
            .filter(|p| path.starts_with(p))
            .max_by_key(|p| p.as_os_str().len());
        holder.is_some_and(|h| self.shared.contains(h))
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
        assert!(!t.propagates_below(Path::new("/var/lib/a b/x")));
        let t = MountTable::parse("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n");
        assert!(t.propagates_below(Path::new("/var/lib")));
    }
}
