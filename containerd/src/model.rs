//! containerd's snapshot model, in this crate's own types: what a snapshot is, what the
//! service returns, and the errors containerd tells apart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use graphdriver_api::DriverError;
use serde::{Deserialize, Serialize};

/// A snapshot's kind. Only `Committed` snapshots can be parents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A read-only view of a committed snapshot, made by `View`.
    View,
    /// A writable snapshot, made by `Prepare`.
    Active,
    /// A frozen snapshot, made by `Commit` of an active one; what images are made of.
    Committed,
}

impl Kind {
    /// The name containerd's filters and `ctr` print (`view`, `active`, `committed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// What `Stat`, `Update` and `List` return about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Its key (active, view) or name (committed).
    pub name: String,
    /// Its parent's name, if any.
    pub parent: Option<String>,
    /// Its kind.
    pub kind: Kind,
    /// When it was made (for a committed snapshot: when it was committed).
    pub created: SystemTime,
    /// When its labels last changed.
    pub updated: SystemTime,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// A mount for containerd to make: `mount -t KIND -o OPTIONS SOURCE TARGET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The filesystem type; `bind` for a bind mount.
    pub kind: String,
    /// A path or a device.
    pub source: PathBuf,
    /// Mount options as fstab spells them.
    pub options: Vec<String>,
}

/// Disk use of a snapshot: what it holds itself, not counting its parent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes of file content.
    pub size: u64,
    /// Files, directories and other entries.
    pub inodes: u64,
}

/// Why a snapshot operation failed, in the classes containerd's `errdefs` tells apart (each
/// maps to the gRPC code containerd expects).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// No snapshot (or parent) by that name: `NotFound`.
    #[error("snapshot {0} does not exist")]
    NotFound(String),
    /// The key or name is taken: `AlreadyExists`.
    #[error("snapshot {0} already exists")]
    AlreadyExists(String),
    /// The snapshot is not in a state that allows the operation: `FailedPrecondition`.
    #[error("snapshot {key}: {reason}")]
    FailedPrecondition {
        /// The snapshot.
        key: String,
        /// What is wrong with its state.
        reason: String,
    },
    /// The request itself is wrong: `InvalidArgument`.
    #[error("{0}")]
    InvalidArgument(String),
    /// The layer store failed.
    #[error("layer {layer} of snapshot {key}")]
    Driver {
        /// The snapshot.
        key: String,
        /// Its layer.
        layer: String,
        /// What the driver said.
        #[source]
        source: DriverError,
    },
    /// The service has stopped using its driver ([`crate::Snapshotter::close`]):
    /// `Unavailable`.
    #[error("the snapshot service is stopping")]
    Closed,
    /// The metadata database failed.
    #[error("snapshot metadata {op}")]
    Metadata {
        /// What was being done.
        op: &'static str,
        /// The database's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The result of a snapshot operation.
pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// A snapshot's record in the metadata database.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The driver layer that holds its files.
    pub layer: String,
    pub kind: Kind,
    pub parent: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
    /// Where it is in a multi-step operation; anything but `Ready` is finished or rolled
    /// back when the service next opens.
    pub state: State,
    /// The boot (`/proc/sys/kernel/random/boot_id`) in which the service took its one
    /// `get` of the layer, and the path that returned; `None` while it holds none.
    pub held: Option<Held>,
    /// A committed snapshot's usage, measured by the first `Usage` after the commit and
    /// kept (the layer no longer changes).
    pub usage: Option<Usage>,
}

/// A mount the service holds for an active snapshot or a view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Held {
    pub boot: String,
    pub path: PathBuf,
}

/// Steps of the operations that touch both the database and the layer store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum State {
    /// Usable.
    Ready,
    /// Prepare or View recorded it; its layer may not exist yet. Rolled back at open.
    Creating,
    /// Remove recorded it; its layer may still exist. Finished at open.
    Removing,
    /// Written by earlier versions' Commit (the committed record, the active snapshot's
    /// mount perhaps still held); released at open. Commit no longer writes it.
    Releasing,
}

impl Record {
    pub fn info(&self, name: &str) -> Info {
        Info {
            name: name.to_owned(),
            parent: self.parent.clone(),
            kind: self.kind,
            created: self.created,
            updated: self.updated,
            labels: self.labels.clone(),
        }
    }
}
