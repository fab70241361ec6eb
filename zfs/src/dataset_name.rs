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
}
