//! The kernel's mount table, as this process sees it (`/proc/self/mountinfo`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::{IoContext, Result};

/// The mounts of this process's mount namespace.
#[derive(Debug, Default, Clone)]
pub struct MountTable {
    /// In mountinfo's order: a later mount at the same point is on top of an earlier one.
    mounts: Vec<Mount>,
    points: HashSet<PathBuf>,
}

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// The filesystem type (`ext4`, `overlay`, `zfs`).
    pub fstype: String,
    /// What is mounted: a device, a zfs dataset, or a name of the filesystem's choosing.
    pub source: String,
    /// Whether it is in a shared peer group (new mounts below it propagate).
    pub shared: bool,
}

impl MountTable {
    /// Reads `/proc/self/mountinfo`.
    pub fn read() -> Result<MountTable> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).ctx("read", path)?;
        Ok(MountTable::parse(&text))
    }

    /// Parses mountinfo text: the fifth field of each line is the mount point, optional
    /// fields follow from the seventh up to a `-`, then the type and the source; spaces,
    /// tabs, newlines and backslashes in them are escaped in octal.
    pub fn parse(text: &str) -> MountTable {
        let mut t = MountTable::default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(point) = fields.get(4).map(|p| PathBuf::from(unescape(p))) else {
                continue;
            };
            let optional = fields.iter().skip(6).take_while(|f| **f != "-");
            let shared = optional.clone().any(|f| f.starts_with("shared:"));
            let mut after = fields.iter().skip(6 + optional.count() + 1);
            let fstype = after.next().map(|f| unescape(f)).unwrap_or_default();
            let source = after.next().map(|f| unescape(f)).unwrap_or_default();
            t.points.insert(point.clone());
            t.mounts.push(Mount {
                point,
                fstype,
                source,
                shared,
            });
        }
        t
    }

    /// The mount that holds `path`: the one whose mount point is the longest that is `path`
    /// or one of its ancestors (the top one, when several are stacked there).
    pub fn holding(&self, path: &Path) -> Option<&Mount> {
        // max_by_key returns the last of equal maxima: the top of a stack
        self.mounts
            .iter()
            .filter(|m| path.starts_with(&m.point))
            .max_by_key(|m| m.point.as_os_str().len())
    }

    /// Whether new mounts made at or below `path` would propagate to peer mounts: the mount
    /// that holds `path` is shared.
    pub fn propagates_below(&self, path: &Path) -> bool {
        self.holding(path).is_some_and(|m| m.shared)
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

    #[test]
    fn the_mount_holding_a_path_is_the_top_one_at_the_longest_prefix() {
        let t = MountTable::parse(
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
             40 22 0:50 / /var/lib rw shared:3 master:1 - zfs tank/lib rw\n\
             41 40 0:51 / /var/lib/graph\\040x rw - zfs tank/graph\\040x rw\n\
             42 22 0:52 / /srv rw - tmpfs tmpfs rw\n\
             43 42 0:53 / /srv rw - zfs tank/srv rw\n",
        );
        let at = |p: &str| {
            t.holding(Path::new(p))
                .map(|m| (m.fstype.as_str(), m.source.as_str()))
        };
        assert_eq!(at("/var/lib/graph x/zfs"), Some(("zfs", "tank/graph x")));
        assert_eq!(at("/var/lib/other"), Some(("zfs", "tank/lib")));
        assert_eq!(
            at("/srv/a"),
            Some(("zfs", "tank/srv")),
            "the top of a stack"
        );
        assert_eq!(at("/etc"), Some(("ext4", "/dev/sda1")));
        assert!(t.propagates_below(Path::new("/var/lib/x")));
        assert!(!t.propagates_below(Path::new("/var/lib/graph x")));
        // octal escapes use the digits 0 to 7 only
        assert_eq!(unescape("a\\089"), "a\\089");
    }
}
