//! Dataset names: `pool/fs/...`, the layer datasets below the driver's one, and the snapshots
//! their clones start from.

use std::fmt;

use graphdriver_api::LayerId;

/// The longest full name ZFS accepts (`ZFS_MAX_DATASET_NAME_LEN` less the NUL).
pub const MAX_NAME_LEN: usize = 255;

/// A filesystem name, `pool` or `pool/a/b`: components of ZFS's allowed characters
/// (alphanumerics, `_ - . :` and space), none empty, no snapshot (`@`) or bookmark (`#`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DatasetName(String);

impl DatasetName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<DatasetName, &'static str> {
        if name.is_empty() {
            return Err("empty dataset name");
        }
        if name.len() > MAX_NAME_LEN {
            return Err("dataset name longer than 255 bytes");
        }
        for c in name.split('/') {
            if c.is_empty() {
                return Err("empty component in dataset name");
            }
            if !c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.: ".contains(&b))
            {
                return Err("dataset names allow only alphanumerics, '_', '-', '.', ':' and ' '");
            }
        }
        if !name.as_bytes()[0].is_ascii_alphabetic() {
            return Err("a pool name begins with a letter");
        }
        Ok(DatasetName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pool: the first component.
    pub fn pool(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    /// The dataset of layer `id` below this one: `<self>/<id>`. (Layer ids use only
    /// characters ZFS allows.)
    pub fn layer(&self, id: &LayerId) -> DatasetName {
        DatasetName(format!("{}/{}", self.0, id))
    }

    /// The layer id of `child` when it is directly below this dataset.
    pub fn layer_of(&self, child: &str) -> Option<LayerId> {
        let rest = child.strip_prefix(self.0.as_str())?.strip_prefix('/')?;
        if rest.contains('/') {
            return None;
        }
        LayerId::new(rest).ok()
    }

    /// The snapshot of this dataset that its children are clones of: `<self>@gd:children`.
    /// One for all children, made with the first and destroyed with the last: a layer with
    /// children is read-only, so what it holds cannot change while the snapshot is in use.
    /// (`:` is not allowed in layer ids, so no earlier per-child name can be the same.)
    pub fn children_snapshot(&self) -> String {
        format!("{}@{CHILDREN_TAG}", self.0)
    }
}

/// The name of the snapshot children are cloned from (see
/// [`DatasetName::children_snapshot`]).
pub const CHILDREN_TAG: &str = "gd:children";

/// The longest driver dataset name that leaves room for every layer id's dataset and its
/// children's snapshot: `<fsname>/<id>@gd:children` within [`MAX_NAME_LEN`].
pub const MAX_FSNAME_LEN: usize =
    MAX_NAME_LEN - 1 - graphdriver_api::MAX_LAYER_ID_LEN - 1 - CHILDREN_TAG.len();

/// The snapshot names an earlier version gave the origin of layer `child`, one per child
/// (`<parent>@<child>`, or `<parent>@gd-<hash>` for a long id): a crash may have left one
/// behind, which the sweep of strays looks for.
pub fn snapshot_tags(child: &LayerId) -> [String; 2] {
    [child.as_str().to_owned(), snapshot_tag(child)]
}

/// A short, stable snapshot name for a long child id (FNV-1a, 64 bits).
fn snapshot_tag(child: &LayerId) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in child.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("gd-{h:016x}")
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The type and source of the mount that holds `path`, from `/proc/self/mountinfo` text: the
/// longest mount point that is `path` or one of its ancestors (for a `zfs` mount, the source
/// is its dataset).
pub fn mount_holding(mountinfo: &str, path: &std::path::Path) -> Option<(String, String)> {
    let mut best: Option<(usize, &str, &str)> = None;
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (Some(point), Some(sep)) = (f.get(4), f.iter().position(|x| *x == "-")) else {
            continue;
        };
        let (Some(fstype), Some(source)) = (f.get(sep + 1), f.get(sep + 2)) else {
            continue;
        };
        let point = unescape(point);
        if !path.starts_with(&point) {
            continue;
        }
        let len = point.len();
        // later lines are mounted over earlier ones at the same point
        if best.is_none_or(|(l, _, _)| len >= l) {
            best = Some((len, fstype, source));
        }
    }
    best.map(|(_, t, s)| (unescape(t), unescape(s)))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
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

    fn id(s: &str) -> LayerId {
        LayerId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn names_are_validated() {
        assert!(DatasetName::new("tank/graph").is_ok());
        assert!(DatasetName::new("tank").is_ok());
        assert!(DatasetName::new("").is_err());
        assert!(DatasetName::new("tank//x").is_err());
        assert!(DatasetName::new("tank/x@snap").is_err());
        assert!(DatasetName::new("tank/x/").is_err());
        assert!(DatasetName::new("1tank").is_err());
        assert!(DatasetName::new(&"t".repeat(256)).is_err());
    }

    #[test]
    fn layers_and_origins_are_named_below_the_driver_dataset() {
        let fs = DatasetName::new("tank/gd").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fs.pool(), "tank");
        let l = fs.layer(&id("abc"));
        assert_eq!(l.as_str(), "tank/gd/abc");
        assert_eq!(fs.layer_of("tank/gd/abc"), Some(id("abc")));
        assert_eq!(fs.layer_of("tank/gd/abc/def"), None);
        assert_eq!(fs.layer_of("tank/gdx"), None);
        assert_eq!(l.children_snapshot(), "tank/gd/abc@gd:children");
    }

    #[test]
    fn every_layer_id_fits_below_the_longest_driver_dataset() {
        let fs = DatasetName::new(&"t".repeat(MAX_FSNAME_LEN)).unwrap_or_else(|e| panic!("{e}"));
        let l = fs.layer(&id(&"c".repeat(graphdriver_api::MAX_LAYER_ID_LEN)));
        assert_eq!(l.children_snapshot().len(), MAX_NAME_LEN);
    }

    #[test]
    fn long_ids_had_short_snapshot_names() {
        let child = id(&"c".repeat(128));
        let [full, short] = snapshot_tags(&child);
        assert_eq!(full, child.as_str());
        assert_eq!(short.len(), 19, "{short}");
        assert_ne!(short, snapshot_tags(&id(&"d".repeat(128)))[1]);
    }

    #[test]
    fn the_mount_holding_a_path_is_the_longest_prefix() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
40 22 0:50 / /var/lib rw - zfs tank/lib rw
41 40 0:51 / /var/lib/graph\\040x rw - zfs tank/graph\\040x rw
42 22 0:52 / /srv rw - tmpfs tmpfs rw
";
        let at = |p: &str| mount_holding(info, std::path::Path::new(p));
        assert_eq!(
            at("/var/lib/graph x/zfs"),
            Some(("zfs".into(), "tank/graph x".into()))
        );
        assert_eq!(at("/srv/a"), Some(("tmpfs".into(), "tmpfs".into())));
        assert_eq!(
            at("/var/lib/other"),
            Some(("zfs".into(), "tank/lib".into()))
        );
        assert_eq!(at("/etc"), Some(("ext4".into(), "/dev/sda1".into())));
    }
}
