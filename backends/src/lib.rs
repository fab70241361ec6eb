//! Every backend this build has (each behind a cargo feature of the same name), by name:
//! what `graphctl`, the bench and the cross-backend tests open drivers through. A runtime
//! links the one backend it uses instead.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use graphdriver_api::GraphDriver;
pub use graphdriver_conformance::Opener;

/// The backends compiled in, in the order reports list them.
#[allow(clippy::vec_init_then_push)] // each push is behind its backend's feature
pub fn openers() -> Vec<Opener> {
    let mut v = Vec::new();
    #[cfg(feature = "vfs")]
    v.push(Opener {
        name: "vfs",
        open: |root, opts| Ok(Box::new(graphdriver_vfs::open(root, opts)?)),
    });
    #[cfg(feature = "overlay2")]
    v.push(Opener {
        name: "overlay2",
        open: |root, opts| Ok(Box::new(graphdriver_overlay2::open(root, opts)?)),
    });
    #[cfg(feature = "btrfs")]
    v.push(Opener {
        name: "btrfs",
        open: |root, opts| Ok(Box::new(graphdriver_btrfs::open(root, opts)?)),
    });
    #[cfg(feature = "devmapper")]
    v.push(Opener {
        name: "devmapper",
        open: |root, opts| Ok(Box::new(graphdriver_devmapper::open(root, opts)?)),
    });
    #[cfg(feature = "zfs")]
    v.push(Opener {
        name: "zfs",
        open: |root, opts| Ok(Box::new(graphdriver_zfs::open(root, opts)?)),
    });
    v
}

/// Names of the backends compiled in.
pub fn names() -> Vec<&'static str> {
    openers().into_iter().map(|o| o.name).collect()
}

/// The backend called `name`.
pub fn opener(name: &str) -> Result<Opener> {
    match openers().into_iter().find(|o| o.name == name) {
        Some(o) => Ok(o),
        None => bail!(
            "unknown driver {name:?} (this build has: {})",
            names().join(", ")
        ),
    }
}

/// Opens driver `name` on `root` (made if missing).
pub fn open(
    name: &str,
    root: &Path,
    opts: &BTreeMap<String, String>,
) -> Result<Box<dyn GraphDriver>> {
    opener(name)?.open(root, opts)
}

/// Whether this machine's kernel offers what driver `name` needs, found by trying the
/// cheapest real thing (opening `/dev/mapper/control` for devmapper, `/dev/zfs` existing for
/// zfs). For choosing default benchmark targets; the suite and the drivers find out for
/// themselves.
pub fn kernel_offers(name: &str) -> bool {
    match name {
        "devmapper" => std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/mapper/control")
            .is_ok(),
        "zfs" => Path::new("/dev/zfs").exists(),
        _ => true,
    }
}
