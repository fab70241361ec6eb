//! What staging learned that the staged tree cannot show: whiteouts, opaque directories and
//! which directories were only implied by deeper entries. Kept in `<staging>/manifest` so an
//! interrupted merge can be finished after a crash.

use std::path::Path;

use crate::store::write_atomic;
use crate::{DriverError, IoContext, Result};

/// Paths are relative to the layer root, as bytes (`/`-separated, no leading `/`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Paths deleted by `.wh.` markers.
    pub whiteouts: Vec<Vec<u8>>,
    /// Directories made opaque by `.wh..wh..opq`.
    pub opaque: Vec<Vec<u8>>,
    /// Directories created only as parents of other entries: merged without their metadata.
    pub implicit: Vec<Vec<u8>>,
    /// Whether the archive had an entry for the root (`./`).
    pub root_explicit: bool,
}

impl Manifest {
    /// One record per line: a tag byte, the path, and a NUL (paths may hold any other byte).
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, list) in [
            (b'W', &self.whiteouts),
            (b'O', &self.opaque),
            (b'I', &self.implicit),
        ] {
            for p in list {
                out.push(tag);
                out.extend_from_slice(p);
                out.push(0);
            }
        }
        if self.root_explicit {
            out.extend_from_slice(b"R\0");
        }
        out
    }

    fn decode(data: &[u8]) -> Option<Manifest> {
        let mut m = Manifest::default();
        for rec in data.split(|&b| b == 0).filter(|r| !r.is_empty()) {
            let (tag, path) = rec.split_first()?;
            match tag {
                b'W' => m.whiteouts.push(path.to_vec()),
                b'O' => m.opaque.push(path.to_vec()),
                b'I' => m.implicit.push(path.to_vec()),
                b'R' => m.root_explicit = true,
                _ => return None,
            }
        }
        Some(m)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.encode())
    }

    pub fn load(path: &Path) -> Result<Manifest> {
        let data = std::fs::read(path).ctx("read", path)?;
        Manifest::decode(&data).ok_or_else(|| DriverError::Corrupt {
            path: path.to_owned(),
            reason: "unknown record in apply manifest".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_bytes() {
        let m = Manifest {
            whiteouts: vec![b"a/b".to_vec(), b"\xff\n weird".to_vec()],
            opaque: vec![b"".to_vec(), b"d".to_vec()],
            implicit: vec![b"x/y".to_vec()],
            root_explicit: true,
        };
        assert_eq!(
            Manifest::decode(&m.encode()).unwrap().whiteouts,
            m.whiteouts
        );
        let d = Manifest::decode(&m.encode()).unwrap();
        assert_eq!(d.implicit, m.implicit);
        assert!(d.root_explicit);
        // an opaque root ("") survives as a bare tag
        assert_eq!(d.opaque, m.opaque);
    }
}
