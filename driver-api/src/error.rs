//! The one error type at the library boundary.

use std::io;
use std::path::PathBuf;

use crate::LayerId;

/// The result of every driver operation.
pub type Result<T, E = DriverError> = std::result::Result<T, E>;

/// Everything a [`GraphDriver`](crate::GraphDriver) operation can fail with.
///
/// Messages are lowercase with no trailing period, and never repeat their cause: the cause is
/// in [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The layer does not exist (also used for a missing parent).
    #[error("layer {0} does not exist")]
    NotFound(LayerId),
    /// A layer with that id exists already.
    #[error("layer {0} already exists")]
    AlreadyExists(LayerId),
    /// The layer has children, so it cannot be removed or changed.
    #[error("layer {id} has children ({})", .children.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "))]
    HasChildren {
        /// The layer.
        id: LayerId,
        /// Its children.
        children: Vec<LayerId>,
    },
    /// The layer is mounted (or in use), so it cannot be removed or changed.
    #[error("layer {id} is busy: {reason}")]
    Busy {
        /// The layer.
        id: LayerId,
        /// What holds it.
        reason: String,
    },
    /// The layer was quarantined: an operation on it could not be finished or rolled back
    /// (see `status`); it can only be removed.
    #[error("layer {id} is quarantined: {reason}")]
    Quarantined {
        /// The layer.
        id: LayerId,
        /// What could not be done.
        reason: String,
    },
    /// `put` of a layer that is not mounted.
    #[error("layer {0} is not mounted")]
    NotMounted(LayerId),
    /// The string is not a valid layer id.
    #[error("invalid layer id {id:?}: {reason}")]
    InvalidId {
        /// The rejected string.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A user-namespace id map the kernel would refuse (see [`crate::idmap::IdMap`]); nothing
    /// was mounted.
    #[error("invalid id map {map:?}: {reason}")]
    InvalidIdMap {
        /// The map as given.
        map: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A layer archive entry is malformed or unsafe; nothing was changed.
    #[error("invalid layer archive entry {entry:?}: {reason}")]
    InvalidArchive {
        /// The entry's name as it appears in the archive (empty when the archive itself is
        /// unreadable before the first entry).
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend, the kernel or the backing filesystem cannot do what was asked.
    #[error("{driver} is not supported here: {reason}")]
    Unsupported {
        /// The driver's name.
        driver: &'static str,
        /// What is missing, and how to get it where that is known.
        reason: String,
    },
    /// The driver's own records are damaged.
    #[error("corrupt driver state at {}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A system call or file operation failed.
    #[error("failed to {op} {}", path.display())]
    Io {
        /// The operation, as a verb phrase ("mount", "create directory").
        op: &'static str,
        /// The path it acted on.
        path: PathBuf,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// An operation failed and undoing its partial effect failed too; both are kept.
    #[error("{error}; rolling back failed too")]
    RollbackFailed {
        /// The original failure.
        error: Box<DriverError>,
        /// The failure of the rollback.
        #[source]
        rollback: Box<DriverError>,
    },
    /// An operation failed, and failed again when tried once more; both are kept.
    #[error("{error}; the try before failed too")]
    RetryFailed {
        /// The failure of the second try.
        error: Box<DriverError>,
        /// The failure of the first try.
        #[source]
        first: Box<DriverError>,
    },
    /// A backend-specific failure (each backend has its own error enum).
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl DriverError {
    /// An [`DriverError::Unsupported`] from `driver`.
    pub fn unsupported(driver: &'static str, reason: impl Into<String>) -> Self {
        DriverError::Unsupported {
            driver,
            reason: reason.into(),
        }
    }

    /// An [`DriverError::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Self {
        DriverError::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    /// This error, or when `rollback` (the undoing of what the failed operation did) failed
    /// too, a [`DriverError::RollbackFailed`] keeping both.
    pub fn with_rollback<T>(self, rollback: Result<T>) -> Self {
        match rollback {
            Ok(_) => self,
            Err(rb) => DriverError::RollbackFailed {
                error: Box::new(self),
                rollback: Box::new(rb),
            },
        }
    }

    /// An [`DriverError::InvalidArchive`] for `entry`.
    pub fn archive(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        DriverError::InvalidArchive {
            entry: entry.into(),
            reason: reason.into(),
        }
    }

    /// Whether the operation failed because the disk (or a quota) is full: an I/O error of
    /// kind `StorageFull` (ENOSPC) or `QuotaExceeded` (EDQUOT) anywhere in its causes. The
    /// operation then left the layer as it was (checked by the `no_space` tests on every
    /// host backend); freeing space and trying again is the remedy.
    pub fn is_storage_full(&self) -> bool {
        match self {
            DriverError::RollbackFailed { error, rollback } => {
                return error.is_storage_full() || rollback.is_storage_full()
            }
            DriverError::RetryFailed { error, first } => {
                return error.is_storage_full() || first.is_storage_full()
            }
            _ => {}
        }
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<io::Error>() {
                if matches!(
                    io.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                ) {
                    return true;
                }
            }
            cur = err.source();
        }
        false
    }

    /// The errno of an underlying I/O error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            DriverError::Io { source, .. } => source.raw_os_error(),
            DriverError::RetryFailed { error, .. } => error.raw_os_error(),
            _ => None,
        }
    }
}

/// Adds the operation and path to an `io::Result`.
pub trait IoContext<T> {
    /// Turns the error into [`DriverError::Io`].
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T, E: Into<io::Error>> IoContext<T> for std::result::Result<T, E> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| DriverError::io(op, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enospc(op: &'static str) -> DriverError {
        DriverError::io(op, "/x", io::Error::from_raw_os_error(libc::ENOSPC))
    }

    #[test]
    fn a_failed_rollback_is_kept_beside_the_error_and_a_good_one_leaves_it_alone() {
        let alone = enospc("write").with_rollback(Ok(()));
        assert!(
            matches!(alone, DriverError::Io { op: "write", .. }),
            "{alone:?}"
        );
        let both = DriverError::NotMounted(LayerId::new("a").unwrap())
            .with_rollback(Ok(1))
            .with_rollback(Err::<(), _>(enospc("remove")));
        let DriverError::RollbackFailed { error, rollback } = &both else {
            panic!("the rollback's failure was dropped: {both:?}");
        };
        assert!(matches!(**error, DriverError::NotMounted(_)), "{error:?}");
        assert!(matches!(**rollback, DriverError::Io { op: "remove", .. }));
        assert!(both.is_storage_full(), "ENOSPC of the rollback counts");
        assert_eq!(
            both.to_string(),
            "layer a is not mounted; rolling back failed too"
        );
    }
}
