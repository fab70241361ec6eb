//! This backend's errors, carried by `DriverError::Backend`.

use std::io;

use graphdriver_api::DriverError;

use crate::sys::DmCmd;

/// What can go wrong in the devmapper backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevmapperError {
    /// `/dev/mapper/control` cannot be opened: no device-mapper in this kernel.
    #[error(
        "cannot open /dev/mapper/control (is device-mapper in the kernel? modprobe dm-thin-pool)"
    )]
    NoDeviceMapper(#[source] io::Error),
    /// A device-mapper ioctl failed.
    #[error("device-mapper {op:?} of {device:?}{} failed", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Ioctl {
        /// The ioctl.
        op: DmCmd,
        /// The device it was for.
        device: String,
        /// For a target message, the message.
        message: Option<String>,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// A device or target name longer than device-mapper allows.
    #[error("device-mapper name {0:?} is too long")]
    NameTooLong(String),
    /// The thin pool's status line is not what the kernel's thin-pool target prints.
    #[error("cannot parse the thin pool status {0:?}")]
    BadStatus(String),
    /// The pool answers read-only, out of space, or needs a check.
    #[error("thin pool {pool} is not usable: {state}")]
    PoolUnusable {
        /// The pool.
        pool: String,
        /// Its state.
        state: String,
        /// ENOSPC when the pool is out of data space, so that
        /// [`DriverError::is_storage_full`] says so.
        #[source]
        full: Option<io::Error>,
    },
    /// Every thin device id (24 bits) is taken.
    #[error("no free thin device id in the pool")]
    NoFreeDeviceId,
    /// A program this backend runs (mkfs) failed.
    #[error("{program} failed: {stderr}")]
    Program {
        /// The command line.
        program: String,
        /// What it printed.
        stderr: String,
    },
}

impl DevmapperError {
    /// The errno of a failed ioctl.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DevmapperError::Ioctl { source, .. } | DevmapperError::NoDeviceMapper(source) => {
                source.raw_os_error()
            }
            _ => None,
        }
    }

    pub(crate) fn with_message(self, msg: &str) -> Self {
        match self {
            DevmapperError::Ioctl {
                op, device, source, ..
            } => DevmapperError::Ioctl {
                op,
                device,
                message: Some(msg.to_owned()),
                source,
            },
            other => other,
        }
    }
}

impl From<DevmapperError> for DriverError {
    fn from(e: DevmapperError) -> Self {
        DriverError::Backend(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unusable(mode: &str) -> DriverError {
        DevmapperError::PoolUnusable {
            pool: "p".into(),
            state: mode.into(),
            full: (mode == "out_of_data_space").then(|| io::Error::from_raw_os_error(libc::ENOSPC)),
        }
        .into()
    }

    #[test]
    fn a_pool_out_of_data_space_is_storage_full_and_a_read_only_one_is_not() {
        let full = unusable("out_of_data_space");
        assert!(full.is_storage_full(), "{full:?}");
        assert_eq!(
            full.to_string(),
            "thin pool p is not usable: out_of_data_space"
        );
        assert!(!unusable("ro").is_storage_full());
    }
}
