//! What `fsck` reports: the store checked against itself and its backend (see
//! [`GraphDriver::fsck`](crate::GraphDriver::fsck)).

use serde::Serialize;

use crate::LayerId;

/// What kind of damage a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// A journal record a crash left: opening the store finished or rolled back its operation.
    InterruptedOperation,
    /// Backend data no record names: opening the store deleted it.
    OrphanData,
    /// A layer set aside because an operation on it could not be finished, or its data or
    /// record is damaged; `remove` clears it.
    Quarantined,
    /// A record that cannot be read.
    UnreadableRecord,
    /// A record whose data the backend does not hold.
    MissingData,
    /// A record naming a parent that has no record.
    MissingParent,
    /// A record with a parent, but no graph edge from that parent (the parent could then be
    /// removed from under it).
    MissingEdge,
    /// A graph edge that no record agrees with.
    DanglingEdge,
    /// A mount count of a layer that has no record, or one that cannot be read.
    StrayMountCount,
    /// A mount inside a layer's tree (its mount point or below): no layer's own mount, but
    /// one that outlived whoever made it (a container's bind mount), which makes unmounting
    /// and removing the layer fail with EBUSY. Repair detaches it.
    LeakedMount,
    /// A mount count that disagrees with the kernel's mount table.
    MountCountMismatch,
}

/// One thing `fsck` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind of damage.
    pub kind: FindingKind,
    /// The layer it concerns, when it concerns one.
    pub layer: Option<LayerId>,
    /// What is wrong, in words.
    pub detail: String,
    /// What was done about it; `None` when nothing was (a check without repair, or damage
    /// that cannot be repaired).
    pub repaired: Option<String>,
}

/// What [`GraphDriver::fsck`](crate::GraphDriver::fsck) found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsckReport {
    /// How many layers the store has.
    pub layers: usize,
    /// Everything found, repaired or not, in the order it was found.
    pub findings: Vec<Finding>,
}

impl FsckReport {
    /// Whether nothing is left to repair (findings that were repaired do not count).
    pub fn is_clean(&self) -> bool {
        self.findings.iter().all(|f| f.repaired.is_some())
    }
}

impl Finding {
    /// A finding of `kind`, about `layer`, not repaired.
    pub fn new(kind: FindingKind, layer: Option<&LayerId>, detail: String) -> Self {
        Finding {
            kind,
            layer: layer.cloned(),
            detail,
            repaired: None,
        }
    }

    /// The finding, repaired as `how` says.
    pub fn repaired(mut self, how: impl Into<String>) -> Self {
        self.repaired = Some(how.into());
        self
    }
}
