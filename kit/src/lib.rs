//! What a graphdriver backend is built from, in three parts that import one way (store →
//! archive → fs):
//!
//! - [`store`]: the layer store. [`store::LayerStore`] keeps records, the parent graph, mount
//!   counts, locks and the crash journal for every backend, which implements the few
//!   methods of [`store::Backend`]; `LayerStore<B>` is then a whole
//!   [`GraphDriver`](graphdriver_api::GraphDriver).
//! - [`archive`]: the OCI layer tar, both directions, with a safe two-phase apply; and
//!   [`NaiveDiff`], changes and sizes by walking two trees (the reference native diffs match).
//! - [`fs`]: filesystem utilities: fd-relative tree walks, copies and removal, atomic files,
//!   the mount table, project quotas, private mounts, the backing filesystem.
//!
//! Beside them: [`idmap`] (user namespaces and idmapped mounts), [`options`] (typed driver
//! options and the store's own), [`failpoint`] (crash points, with the `failpoints`
//! feature). The contract itself (the trait, errors, ids) is `graphdriver-api`.

pub mod archive;
pub mod failpoint;
pub mod fs;
pub mod idmap;
mod naive;
pub mod options;
pub mod store;
mod sys;

pub use naive::{NaiveDiff, RACY_WINDOW_SECS};

// the contract's items, for this crate's own paths (`crate::LayerId`)
use graphdriver_api::{
    Change, ChangeKind, CreateOpts, DriverError, Finding, FindingKind, FsckReport, GraphDriver,
    IoContext, LayerId, LayerInfo, MountOpts, MountSpec, Result, Status,
};
// the filesystem utilities, for this crate's own paths (`crate::tree`)
use fs::{chunks, dir_cursor, layer_mount, mountinfo, tree, BackingFs};
