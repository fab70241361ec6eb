//! Thin-pool and thin status lines and tables, as data: parsed and built without a kernel,
//! so they are unit-tested here (`Documentation/admin-guide/device-mapper/thin-provisioning.rst`).

use std::fmt;
use std::str::FromStr;

use crate::error::DevmapperError;
use crate::sectors::Sectors;

/// A thin-pool target's status line:
/// `<transaction id> <used meta>/<total meta> <used data>/<total data> <held root> ro|rw|out_of_data_space ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// The pool's transaction id (set by `set_transaction_id`).
    pub transaction_id: u64,
    /// Metadata blocks (4 KiB) used.
    pub meta_used: u64,
    /// Metadata blocks in all.
    pub meta_total: u64,
    /// Data blocks used.
    pub data_used: u64,
    /// Data blocks in all.
    pub data_total: u64,
    /// `rw`, `ro`, `out_of_data_space` or `Fail`.
    pub mode: String,
    /// `needs_check` was printed.
    pub needs_check: bool,
    /// `error_if_no_space` was printed: a write the full pool cannot place fails at once
    /// (`queue_if_no_space`: it waits up to the kernel's `no_space_timeout`).
    pub error_if_no_space: bool,
}

impl FromStr for PoolStatus {
    type Err = DevmapperError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DevmapperError::BadStatus(s.to_owned());
        let f: Vec<&str> = s.split_whitespace().collect();
        if f.first() == Some(&"Fail") {
            return Ok(PoolStatus {
                transaction_id: 0,
                meta_used: 0,
                meta_total: 0,
                data_used: 0,
                data_total: 0,
                mode: "Fail".into(),
                needs_check: false,
                error_if_no_space: false,
            });
        }
        let pair = |x: Option<&&str>| -> Result<(u64, u64), DevmapperError> {
            let (a, b) = x.ok_or_else(bad)?.split_once('/').ok_or_else(bad)?;
            Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
        };
        let transaction_id = f.first().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let (meta_used, meta_total) = pair(f.get(1))?;
        let (data_used, data_total) = pair(f.get(2))?;
        let mode = f.get(4).ok_or_else(bad)?.to_string();
        Ok(PoolStatus {
            transaction_id,
            meta_used,
            meta_total,
            data_used,
            data_total,
            mode,
            needs_check: f.contains(&"needs_check"),
            error_if_no_space: f.contains(&"error_if_no_space"),
        })
    }
}

/// A thin target's status line: `<nr mapped sectors> <highest mapped sector>`, or `-` when
/// nothing is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinStatus {
    /// Sectors mapped (its own and those shared with its origin).
    pub mapped_sectors: Sectors,
}

impl FromStr for ThinStatus {
    type Err = DevmapperError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let first = s
            .split_whitespace()
            .next()
            .ok_or_else(|| DevmapperError::BadStatus(s.to_owned()))?;
        if first == "-" || first == "Fail" {
            return Ok(ThinStatus {
                mapped_sectors: Sectors(0),
            });
        }
        Ok(ThinStatus {
            mapped_sectors: Sectors(
                first
                    .parse()
                    .map_err(|_| DevmapperError::BadStatus(s.to_owned()))?,
            ),
        })
    }
}

/// The parameters of a thin-pool table line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTable {
    /// Metadata device, `major:minor`.
    pub metadata: String,
    /// Data device, `major:minor`.
    pub data: String,
    /// Data block size (64 KiB to 1 GiB, a multiple of 128 sectors).
    pub block_sectors: Sectors,
    /// Free blocks under which the pool raises an event.
    pub low_water_blocks: u64,
    /// Fail writes at once when the pool is out of data space (`error_if_no_space`), rather
    /// than queue them for the kernel's `no_space_timeout` (60 s) first.
    pub error_if_no_space: bool,
}

impl fmt::Display for PoolTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.metadata, self.data, self.block_sectors, self.low_water_blocks
        )?;
        if self.error_if_no_space {
            f.write_str(" 1 error_if_no_space")?;
        }
        Ok(())
    }
}

/// The parameters of a thin table line: the pool device and the thin device id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinTable {
    /// The pool, `major:minor`.
    pub pool: String,
    /// The device id within the pool.
    pub device_id: u32,
}

impl fmt::Display for ThinTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.pool, self.device_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_status_parses_the_kernels_line() {
        let s: PoolStatus =
            "7 141/524288 33/1638400 - rw discard_passdown queue_if_no_space - 1024"
                .parse()
                .unwrap();
        assert_eq!(s.transaction_id, 7);
        assert_eq!((s.meta_used, s.meta_total), (141, 524288));
        assert_eq!((s.data_used, s.data_total), (33, 1638400));
        assert_eq!(s.mode, "rw");
        assert!(!s.needs_check && !s.error_if_no_space);
        let s: PoolStatus = "0 10/20 0/5 - ro no_discard_passdown error_if_no_space needs_check 4"
            .parse()
            .unwrap();
        assert!(s.needs_check && s.error_if_no_space);
        assert_eq!(s.mode, "ro");
        assert_eq!("Fail".parse::<PoolStatus>().unwrap().mode, "Fail");
        assert!("x 1/2".parse::<PoolStatus>().is_err());
    }

    #[test]
    fn thin_status_is_mapped_sectors_or_dash() {
        assert_eq!(
            "2048 4095".parse::<ThinStatus>().unwrap().mapped_sectors,
            Sectors(2048)
        );
        assert_eq!(
            "-".parse::<ThinStatus>().unwrap().mapped_sectors,
            Sectors(0)
        );
        assert!("".parse::<ThinStatus>().is_err());
    }

    #[test]
    fn tables_print_as_the_kernel_reads_them() {
        let t = PoolTable {
            metadata: "7:1".into(),
            data: "7:0".into(),
            block_sectors: Sectors(128),
            low_water_blocks: 32768,
            error_if_no_space: false,
        };
        assert_eq!(t.to_string(), "7:1 7:0 128 32768");
        let t = PoolTable {
            error_if_no_space: true,
            ..t
        };
        assert_eq!(t.to_string(), "7:1 7:0 128 32768 1 error_if_no_space");
        let t = ThinTable {
            pool: "253:0".into(),
            device_id: 12,
        };
        assert_eq!(t.to_string(), "253:0 12");
    }
}
