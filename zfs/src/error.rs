//! What the zfs backend fails with, under [`DriverError::Backend`].

use std::io;

use graphdriver_api::DriverError;

/// A failed ZFS call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZfsError {
    /// A libzfs_core call failed with an errno.
    #[error("failed to {op} {name}")]
    Core {
        /// The operation, as a verb phrase ("create dataset").
        op: &'static str,
        /// The dataset or snapshot it acted on.
        name: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// A libzfs call failed; libzfs reports a description, not an errno.
    #[error("failed to {op} {name}: {description}")]
    Lib {
        /// The operation.
        op: &'static str,
        /// The dataset or pool it acted on.
        name: String,
        /// libzfs's description of the failure.
        description: String,
    },
    /// A layer's dataset name is taken by another driver home: two roots on one dataset
    /// share the names below it, and a content-addressed id can be in both.
    #[error(
        "dataset {name} holds a layer of {}, not of this driver home: roots that share a dataset cannot hold a layer with the same id; give each root a dataset of its own (zfs create, mounted at the root, or --opt zfs.fsname)",
        owner.as_deref().map_or_else(|| "no driver home".to_owned(), |o| format!("the driver home {o}"))
    )]
    Taken {
        /// The dataset.
        name: String,
        /// The home its `org.graphdriver:root` property names, if it has one.
        owner: Option<String>,
    },
    /// A channel program (a Lua program ZFS runs in one transaction group) could not run
    /// or raised an error.
    #[error("failed to {op} {name}: channel program failed{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Program {
        /// The operation.
        op: &'static str,
        /// The dataset it acted on.
        name: String,
        /// Lua's message, when the program raised an error.
        message: Option<String>,
        /// The errno (`ECHRNG` for a Lua error).
        #[source]
        source: io::Error,
    },
}

impl From<ZfsError> for DriverError {
    fn from(e: ZfsError) -> Self {
        DriverError::Backend(Box::new(e))
    }
}

/// Adds the operation and dataset to a libzfs_core result.
pub(crate) trait CoreContext<T> {
    fn zctx(self, op: &'static str, name: &str) -> Result<T, ZfsError>;
}

impl<T> CoreContext<T> for io::Result<T> {
    fn zctx(self, op: &'static str, name: &str) -> Result<T, ZfsError> {
        self.map_err(|source| ZfsError::Core {
            op,
            name: name.to_owned(),
            source,
        })
    }
}

/// Adds the operation and dataset to a libzfs result.
pub(crate) trait LibContext<T> {
    fn lctx(self, op: &'static str, name: &str) -> Result<T, ZfsError>;
}

impl<T> LibContext<T> for Result<T, String> {
    fn lctx(self, op: &'static str, name: &str) -> Result<T, ZfsError> {
        self.map_err(|description| ZfsError::Lib {
            op,
            name: name.to_owned(),
            description,
        })
    }
}
