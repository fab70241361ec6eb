//! Sizes as device-mapper counts them: [`Sectors`] of 512 bytes in tables and status lines,
//! [`Bytes`] everywhere else. Conversions are explicit, so a table never gets a byte count.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A size in bytes (in the metadata file, a plain number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bytes(pub u64);

/// A count of 512-byte sectors, the unit of device-mapper tables (whatever the devices'
/// own block size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sectors(pub u64);

impl Sectors {
    /// Bytes in a sector (`SECTOR_SHIFT` 9 in the kernel).
    pub const SIZE: u64 = 512;

    /// The same size in bytes.
    pub fn bytes(self) -> Bytes {
        Bytes(self.0 * Self::SIZE)
    }

    /// The largest multiple of `unit` not above this (a pool's data length in whole
    /// blocks).
    pub fn round_down_to(self, unit: Sectors) -> Sectors {
        Sectors(self.0 / unit.0 * unit.0)
    }
}

impl Bytes {
    /// The whole sectors in this size (a partial last sector is left out).
    pub fn sectors(self) -> Sectors {
        Sectors(self.0 / Sectors::SIZE)
    }

    /// This size rounded up to a whole sector.
    pub fn round_up_to_sector(self) -> Bytes {
        Bytes(self.0.div_ceil(Sectors::SIZE) * Sectors::SIZE)
    }
}

/// The number, as tables and status lines write it.
impl fmt::Display for Sectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_become_whole_sectors_and_back() {
        assert_eq!(Bytes(10 << 30).sectors(), Sectors(20_971_520));
        assert_eq!(Bytes(1023).sectors(), Sectors(1));
        assert_eq!(Sectors(3).bytes(), Bytes(1536));
        assert_eq!(Bytes(1).round_up_to_sector(), Bytes(512));
        assert_eq!(Bytes(1024).round_up_to_sector(), Bytes(1024));
        assert_eq!(Sectors(1000).round_down_to(Sectors(128)), Sectors(896));
        assert_eq!(Sectors(128).to_string(), "128");
        // the metadata file keeps plain numbers
        assert_eq!(serde_json::to_string(&Bytes(512)).unwrap(), "512");
        assert_eq!(serde_json::from_str::<Bytes>("512").unwrap(), Bytes(512));
    }
}
