//! containerd's snapshot service on any graphdriver backend.
//!
//! containerd loads external snapshotters as proxy plugins: it calls
//! `containerd.services.snapshots.v1.Snapshots` over a unix socket named in its config,
//!
//! ```toml
//! [proxy_plugins.graphdriver]
//!   type = "snapshot"
//!   address = "/run/graphdriver/snapshotter.sock"
//! ```
//!
//! and `ctr images import --snapshotter graphdriver`, `ctr run --snapshotter graphdriver` use
//! it. This crate serves that API ([`serve`]) on a [`Snapshotter`]: containerd's snapshot
//! model (keys and names in one namespace; kinds active, view and committed; only committed
//! snapshots are parents; labels) kept in an embedded transactional database beside the
//! driver's layer store, one driver layer per snapshot. `graphctl snapshotter --address
//! SOCKET` runs it; a Rust runtime can embed it the same way:
//!
//! ```no_run
//! # async fn run(driver: Box<dyn graphdriver_api::GraphDriver>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use graphdriver_containerd::{serve, Snapshotter};
//!
//! let snapshotter = Arc::new(Snapshotter::open(driver, "/var/lib/graphdriver/containerd".as_ref())?);
//! serve(snapshotter, "/run/graphdriver/snapshotter.sock".as_ref(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(()) }
//! ```

/// The generated protobuf messages, server and client of containerd's snapshot API.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod api {
    /// `containerd.*`
    pub mod containerd {
        /// `containerd.types`: the mount containerd makes.
        pub mod types {
            tonic::include_proto!("containerd.types");
        }
        /// `containerd.services`
        pub mod services {
            /// `containerd.services.snapshots`
            pub mod snapshots {
                /// `containerd.services.snapshots.v1`: the snapshot service.
                pub mod v1 {
                    tonic::include_proto!("containerd.services.snapshots.v1");
                }
            }
        }
    }
}

mod authority;
mod filter;
mod metadata;
mod model;
mod service;
mod snapshotter;

pub use model::{Info, Kind, Mount, Result, SnapshotError, Usage};
pub use service::{serve, ServeError, Service};
pub use snapshotter::{Snapshotter, GIDMAP_LABEL, LAYER_PREFIX, UIDMAP_LABEL};
