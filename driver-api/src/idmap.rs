//! User-namespace id mappings: what [`MountOpts::id_map`](crate::MountOpts::id_map) asks a
//! layer to be shown through (the mounts themselves are graphdriver-kit's `idmap`).
//!
//! A container in a user namespace runs as ids that the host sees shifted (its root is, say,
//! host uid 100000). An **idmapped mount** shows a layer's files through such a mapping: a
//! file stored as uid 0 appears as uid 100000 through the mount, so the container's root owns
//! it, and what the container writes through the mount is stored with the unmapped ids (uid
//! 0 again). The image's layers are shared by every mapping, and nothing is copied or
//! chowned. See mount_setattr(2), `MOUNT_ATTR_IDMAP`.

use std::fmt;
use std::str::FromStr;

use crate::{DriverError, Result};

/// The most ranges a kernel id map takes (user_namespaces(7)).
pub const MAX_RANGES: usize = 340;

/// One range of an id map: ids `inside..inside+count` of the namespace are host ids
/// `outside..outside+count`, as a line of `/proc/PID/uid_map` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdRange {
    /// The first id inside the namespace.
    pub inside: u32,
    /// The host id it is.
    pub outside: u32,
    /// How many ids the range holds.
    pub count: u32,
}

impl IdRange {
    /// The host id of `inside`, if this range holds it.
    pub fn to_host(&self, inside: u32) -> Option<u32> {
        let off = inside.checked_sub(self.inside)?;
        (off < self.count).then(|| self.outside + off)
    }
}

/// The uid and gid maps of a user namespace: what a container's ids are on the host.
///
/// Text form (containerd's `containerd.io/snapshot/uidmapping` label, one per kind):
/// `inside:outside:count` ranges joined by commas, e.g. `0:100000:65536`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdMap {
    /// User ids.
    pub uids: Vec<IdRange>,
    /// Group ids.
    pub gids: Vec<IdRange>,
}

impl IdMap {
    /// The same ranges for uids and gids: `count` ids from `inside` are host ids from
    /// `outside`.
    pub fn single(inside: u32, outside: u32, count: u32) -> Result<IdMap> {
        let r = vec![IdRange {
            inside,
            outside,
            count,
        }];
        let m = IdMap {
            uids: r.clone(),
            gids: r,
        };
        m.validate()?;
        Ok(m)
    }

    /// Parses the two maps from their text forms and checks them.
    pub fn parse(uids: &str, gids: &str) -> Result<IdMap> {
        let m = IdMap {
            uids: parse_ranges(uids)?,
            gids: parse_ranges(gids)?,
        };
        m.validate()?;
        Ok(m)
    }

    /// Checks what the kernel would refuse, so a bad map is refused before anything is
    /// mounted: 1 to [`MAX_RANGES`] ranges per kind, none empty, none past `u32::MAX`, and no
    /// two overlapping inside or outside.
    pub fn validate(&self) -> Result<()> {
        for (kind, ranges) in [("uid", &self.uids), ("gid", &self.gids)] {
            let bad = |reason: String| DriverError::InvalidIdMap {
                map: self.to_string(),
                reason: format!("{kind} map: {reason}"),
            };
            if ranges.is_empty() || ranges.len() > MAX_RANGES {
                return Err(bad(format!(
                    "needs 1 to {MAX_RANGES} ranges, has {}",
                    ranges.len()
                )));
            }
            for r in ranges {
                if r.count == 0 {
                    return Err(bad("a range of 0 ids".into()));
                }
                if r.inside.checked_add(r.count - 1).is_none()
                    || r.outside.checked_add(r.count - 1).is_none()
                {
                    return Err(bad(format!(
                        "{}:{}:{} runs past the last id",
                        r.inside, r.outside, r.count
                    )));
                }
            }
            for side in [|r: &IdRange| r.inside, |r: &IdRange| r.outside] {
                let mut v: Vec<(u32, u32)> = ranges.iter().map(|r| (side(r), r.count)).collect();
                v.sort_unstable();
                if v.windows(2)
                    .any(|w| u64::from(w[0].0) + u64::from(w[0].1) > u64::from(w[1].0))
                {
                    return Err(bad("two ranges overlap".into()));
                }
            }
        }
        Ok(())
    }

    /// The host uid of namespace uid `inside`, if mapped.
    pub fn host_uid(&self, inside: u32) -> Option<u32> {
        self.uids.iter().find_map(|r| r.to_host(inside))
    }

    /// The host gid of namespace gid `inside`, if mapped.
    pub fn host_gid(&self, inside: u32) -> Option<u32> {
        self.gids.iter().find_map(|r| r.to_host(inside))
    }
}

fn ranges_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{}:{}:{}", r.inside, r.outside, r.count))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_ranges(text: &str) -> Result<Vec<IdRange>> {
    let bad = |reason: &str| DriverError::InvalidIdMap {
        map: text.to_owned(),
        reason: reason.to_owned(),
    };
    if text.trim().is_empty() {
        return Err(bad("empty"));
    }
    text.split(',')
        .map(|part| {
            let n: Vec<u32> = part
                .trim()
                .split(':')
                .map(|x| x.parse::<u32>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad("a range is not inside:outside:count in decimal"))?;
            match n[..] {
                [inside, outside, count] => Ok(IdRange {
                    inside,
                    outside,
                    count,
                }),
                _ => Err(bad("a range is not inside:outside:count")),
            }
        })
        .collect()
}

impl fmt::Display for IdMap {
    /// `uids=0:100000:65536 gids=0:100000:65536`: the form mount records keep.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uids={} gids={}",
            ranges_text(&self.uids),
            ranges_text(&self.gids)
        )
    }
}

impl FromStr for IdMap {
    type Err = DriverError;

    /// Reads what [`Display`](fmt::Display) wrote.
    fn from_str(s: &str) -> Result<IdMap> {
        let mut parts = s.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(u), Some(g), None) if u.starts_with("uids=") && g.starts_with("gids=") => {
                IdMap::parse(&u[5..], &g[5..])
            }
            _ => Err(DriverError::InvalidIdMap {
                map: s.to_owned(),
                reason: "not \"uids=RANGES gids=RANGES\"".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_parse_print_and_read_back() {
        let m = IdMap::parse("0:100000:65536", "0:200000:1000,1000:300000:1").unwrap();
        assert_eq!(m.host_uid(0), Some(100000));
        assert_eq!(m.host_uid(65535), Some(165535));
        assert_eq!(m.host_uid(65536), None);
        assert_eq!(m.host_gid(1000), Some(300000));
        assert_eq!(m.host_gid(999), Some(200999));
        let text = m.to_string();
        assert_eq!(text, "uids=0:100000:65536 gids=0:200000:1000,1000:300000:1");
        assert_eq!(text.parse::<IdMap>().unwrap(), m);
    }

    #[test]
    fn maps_the_kernel_would_refuse_are_refused_by_name() {
        for (u, why) in [
            ("", "empty"),
            ("0:1", "inside:outside:count"),
            ("0:x:1", "decimal"),
            ("0:100000:0", "0 ids"),
            ("4294967295:0:2", "past the last id"),
            ("0:100000:10,5:200000:10", "overlap"),
            ("0:100000:10,20:100005:10", "overlap"),
        ] {
            let e = IdMap::parse(u, "0:1:1").unwrap_err();
            assert!(
                matches!(&e, DriverError::InvalidIdMap { reason, .. } if reason.contains(why)),
                "{u:?}: {e}"
            );
        }
        let many = (0..=MAX_RANGES as u32)
            .map(|i| format!("{i}:{}:1", 1000 + i))
            .collect::<Vec<_>>()
            .join(",");
        assert!(IdMap::parse(&many, "0:1:1").is_err());
        assert!("uids=0:1:1".parse::<IdMap>().is_err());
    }
}
