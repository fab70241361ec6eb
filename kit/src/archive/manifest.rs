//! What staging learned that the staged tree cannot show: whiteouts, opaque directories and
//! which directories were only implied by deeper entries. Kept in `<staging>/manifest` so an
//! interrupted merge can be finished after a crash.

use std::path::Path;

use crate::fs::atomic_file::write_atomic;
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

/// The first bytes of a manifest in the length-prefixed format.
const MAGIC: &[u8] = b"graphdriver-manifest 2\n";

impl Manifest {
    /// After [`MAGIC`], one record per path: a tag byte, the path's length as 8 little-endian
    /// bytes, the path. Lengths, not separators: a path may hold any byte.
    fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let mut record = |tag: u8, p: &[u8]| {
            out.push(tag);
            out.extend_from_slice(&(p.len() as u64).to_le_bytes());
            out.extend_from_slice(p);
        };
        for (tag, list) in [
            (b'W', &self.whiteouts),
            (b'O', &self.opaque),
            (b'I', &self.implicit),
        ] {
            for p in list {
                record(tag, p);
            }
        }
        if self.root_explicit {
            record(b'R', b"");
        }
        out
    }

    fn decode(data: &[u8]) -> Option<Manifest> {
        let Some(mut rest) = data.strip_prefix(MAGIC) else {
            return Self::decode_v1(data);
        };
        let mut m = Manifest::default();
        while let Some((&tag, after)) = rest.split_first() {
            let (len, after) = after.split_first_chunk::<8>()?;
            let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
            if len > after.len() {
                return None;
            }
            let (path, after) = after.split_at(len);
            m.push(tag, path)?;
            rest = after;
        }
        Some(m)
    }

    /// The first format, NUL-separated records, left by a merge an older version began.
    fn decode_v1(data: &[u8]) -> Option<Manifest> {
        let mut m = Manifest::default();
        for rec in data.split(|&b| b == 0).filter(|r| !r.is_empty()) {
            let (tag, path) = rec.split_first()?;
            m.push(*tag, path)?;
        }
        Some(m)
    }

    fn push(&mut self, tag: u8, path: &[u8]) -> Option<()> {
        match tag {
            b'W' => self.whiteouts.push(path.to_vec()),
            b'O' => self.opaque.push(path.to_vec()),
            b'I' => self.implicit.push(path.to_vec()),
            b'R' => self.root_explicit = true,
            _ => return None,
        }
        Some(())
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

    #[test]
    fn paths_with_nul_and_separators_round_trip() {
        let m = Manifest {
            whiteouts: vec![b"a\0b".to_vec(), b"\0".to_vec(), b"W\0O".to_vec()],
            opaque: vec![b"x\0\0".to_vec()],
            implicit: vec![b"".to_vec()],
            root_explicit: false,
        };
        assert_eq!(Manifest::decode(&m.encode()), Some(m));
    }

    #[test]
    fn truncated_manifest_is_refused_not_misread() {
        let m = Manifest {
            whiteouts: vec![b"abc".to_vec()],
            ..Manifest::default()
        };
        let data = m.encode();
        for cut in MAGIC.len() + 1..data.len() {
            assert_eq!(Manifest::decode(&data[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn first_format_is_still_read() {
        let d = Manifest::decode(b"Wa/b\0Ox\0R\0").unwrap();
        assert_eq!(d.whiteouts, vec![b"a/b".to_vec()]);
        assert_eq!(d.opaque, vec![b"x".to_vec()]);
        assert!(d.root_explicit);
    }
}
