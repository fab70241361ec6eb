//! The tables this backend loads, as data: one [`Target`] each, printed as the kernel reads
//! its parameters (`Documentation/admin-guide/device-mapper/thin-provisioning.rst`).

use std::fmt;

use crate::pool_status::{PoolTable, ThinTable};
use crate::sectors::Sectors;

/// A device-mapper target and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `thin-pool`: the pool over its metadata and data devices.
    ThinPool(PoolTable),
    /// `thin`: one thin device of a pool.
    Thin(ThinTable),
    /// `error`: every I/O fails. A spare holds one instead of a thin device.
    Error,
}

impl Target {
    /// The target's type, as `struct dm_target_spec` names it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Target::ThinPool(_) => "thin-pool",
            Target::Thin(_) => "thin",
            Target::Error => "error",
        }
    }
}

/// The parameters, the text that follows `struct dm_target_spec` in a `DM_TABLE_LOAD`.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::ThinPool(t) => t.fmt(f),
            Target::Thin(t) => t.fmt(f),
            Target::Error => Ok(()),
        }
    }
}

/// A one-target table: sectors 0 to `length` mapped by `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// How many sectors the device has.
    pub length: Sectors,
    /// What maps them.
    pub target: Target,
}

/// The line `dmsetup table` prints for it: `0 <length> <type> <parameters>`.
impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0 {} {}", self.length, self.target.type_name())?;
        let params = self.target.to_string();
        if !params.is_empty() {
            write!(f, " {params}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The type and parameters each load passed as strings before the targets were typed.
    #[test]
    fn targets_print_the_strings_loaded_before_they_were_typed() {
        let pool = Target::ThinPool(PoolTable {
            metadata: "7:1".into(),
            data: "7:0".into(),
            block_sectors: Sectors(128),
            low_water_blocks: 1638,
            error_if_no_space: true,
        });
        assert_eq!(pool.type_name(), "thin-pool");
        assert_eq!(pool.to_string(), "7:1 7:0 128 1638 1 error_if_no_space");
        let thin = Target::Thin(ThinTable {
            pool: "253:0".into(),
            device_id: 12,
        });
        assert_eq!(thin.type_name(), "thin");
        assert_eq!(thin.to_string(), "253:0 12");
        assert_eq!(Target::Error.type_name(), "error");
        assert_eq!(Target::Error.to_string(), "");
    }

    #[test]
    fn a_table_prints_as_dmsetup_shows_it() {
        let t = Table {
            length: Sectors(20_971_520),
            target: Target::Thin(ThinTable {
                pool: "253:0".into(),
                device_id: 3,
            }),
        };
        assert_eq!(t.to_string(), "0 20971520 thin 253:0 3");
        let t = Table {
            length: Sectors(8),
            target: Target::Error,
        };
        assert_eq!(t.to_string(), "0 8 error");
    }
}
