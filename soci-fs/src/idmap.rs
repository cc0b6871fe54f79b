//! User-namespace id mappings for id-mapped mounts (SPEC §5.3.7, §5.11): the owners a layer
//! reports are the host ids that the container's ids map to.

use std::fmt;

/// Owner reported for an id that no range maps (the kernel's overflow id).
pub const OVERFLOW_ID: u32 = 65534;

/// One mapping range: container ids `container..container + size` are host ids
/// `host..host + size` (an OCI `LinuxIDMapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id inside the container.
    pub container: u32,
    /// First id on the host.
    pub host: u32,
    /// Number of ids.
    pub size: u32,
}

impl IdRange {
    /// `size` ids from `container` inside the container map to ids from `host` on the host.
    pub const fn new(container: u32, host: u32, size: u32) -> IdRange {
        IdRange {
            container,
            host,
            size,
        }
    }

    fn contains(&self, id: u32) -> bool {
        id >= self.container && u64::from(id) < u64::from(self.container) + u64::from(self.size)
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.container, self.host, self.size)
    }
}

/// Why a set of ranges is not a usable mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdMapError {
    /// No range at all.
    #[error("empty {0} mapping")]
    Empty(&'static str),
    /// A range of size 0.
    #[error("{0} mapping {1} has size 0")]
    ZeroSize(&'static str, IdRange),
    /// A range that runs past the largest 32-bit id.
    #[error("{0} mapping {1} exceeds the 32-bit id space")]
    Overflow(&'static str, IdRange),
    /// Two ranges share container ids (the mapping would be ambiguous) or host ids (two
    /// container ids would own the same host files).
    #[error("{0} mappings {1} and {2} overlap")]
    Overlap(&'static str, IdRange, IdRange),
}

/// Uid and gid mappings, validated: non-empty, no empty range, within 32 bits, no overlap
/// on either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    uids: Vec<IdRange>,
    gids: Vec<IdRange>,
}

fn validate(what: &'static str, ranges: &[IdRange]) -> Result<(), IdMapError> {
    if ranges.is_empty() {
        return Err(IdMapError::Empty(what));
    }
    let end = |start: u32, size: u32| u64::from(start) + u64::from(size);
    for r in ranges {
        if r.size == 0 {
            return Err(IdMapError::ZeroSize(what, *r));
        }
        if end(r.container, r.size) > 1 << 32 || end(r.host, r.size) > 1 << 32 {
            return Err(IdMapError::Overflow(what, *r));
        }
    }
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            let overlap = |a0: u32, b0: u32| {
                u64::from(a0) < end(b0, b.size) && u64::from(b0) < end(a0, a.size)
            };
            if overlap(a.container, b.container) || overlap(a.host, b.host) {
                return Err(IdMapError::Overlap(what, *a, *b));
            }
        }
    }
    Ok(())
}

fn map(ranges: &[IdRange], id: u32) -> u32 {
    ranges
        .iter()
        .find(|r| r.contains(id))
        .map_or(OVERFLOW_ID, |r| r.host + (id - r.container))
}

impl IdMap {
    /// A mapping from uid and gid ranges.
    pub fn new(uids: Vec<IdRange>, gids: Vec<IdRange>) -> Result<IdMap, IdMapError> {
        validate("uid", &uids)?;
        validate("gid", &gids)?;
        Ok(IdMap { uids, gids })
    }

    /// The uid ranges.
    pub fn uids(&self) -> &[IdRange] {
        &self.uids
    }

    /// The gid ranges.
    pub fn gids(&self) -> &[IdRange] {
        &self.gids
    }

    /// Host uid of container uid `id`; [`OVERFLOW_ID`] when no range covers it.
    pub fn uid(&self, id: u32) -> u32 {
        map(&self.uids, id)
    }

    /// Host gid of container gid `id`; [`OVERFLOW_ID`] when no range covers it.
    pub fn gid(&self, id: u32) -> u32 {
        map(&self.gids, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_ids_through_ranges() {
        let m = IdMap::new(
            vec![
                IdRange::new(0, 12345, 1000),
                IdRange::new(1000, 22222, 64536),
            ],
            vec![IdRange::new(0, 100000, 65536)],
        )
        .expect("valid");
        assert_eq!(m.uid(0), 12345);
        assert_eq!(m.uid(999), 13344);
        assert_eq!(m.uid(1000), 22222);
        assert_eq!(m.uid(65535), 22222 + 64535);
        assert_eq!(m.uid(65536), OVERFLOW_ID);
        assert_eq!(m.uid(u32::MAX), OVERFLOW_ID);
        assert_eq!(m.gid(0), 100000);
        assert_eq!(m.gid(1000), 101000);
        assert_eq!(m.gid(70000), OVERFLOW_ID);
        // A range that ends exactly at the top of the id space.
        let top = IdMap::new(
            vec![IdRange::new(u32::MAX, 7, 1)],
            vec![IdRange::new(5, u32::MAX - 1, 2)],
        )
        .expect("valid");
        assert_eq!(top.uid(u32::MAX), 7);
        assert_eq!(top.uid(u32::MAX - 1), OVERFLOW_ID);
        assert_eq!(top.gid(6), u32::MAX);
        assert_eq!(top.gid(4), OVERFLOW_ID);
    }

    #[test]
    fn rejects_invalid_ranges() {
        let ok = vec![IdRange::new(0, 1000, 10)];
        assert_eq!(
            IdMap::new(vec![], ok.clone()),
            Err(IdMapError::Empty("uid"))
        );
        assert_eq!(
            IdMap::new(ok.clone(), vec![IdRange::new(0, 1, 0)]),
            Err(IdMapError::ZeroSize("gid", IdRange::new(0, 1, 0)))
        );
        assert!(matches!(
            IdMap::new(vec![IdRange::new(2, 0, u32::MAX)], ok.clone()),
            Err(IdMapError::Overflow("uid", _))
        ));
        assert!(matches!(
            IdMap::new(vec![IdRange::new(0, u32::MAX, 2)], ok.clone()),
            Err(IdMapError::Overflow("uid", _))
        ));
        assert!(matches!(
            IdMap::new(
                vec![IdRange::new(0, 100, 10), IdRange::new(9, 200, 1)],
                ok.clone()
            ),
            Err(IdMapError::Overlap("uid", _, _))
        ));
        assert!(matches!(
            IdMap::new(
                ok.clone(),
                vec![IdRange::new(0, 100, 10), IdRange::new(10, 105, 1)]
            ),
            Err(IdMapError::Overlap("gid", _, _))
        ));
        // Adjacent ranges do not overlap.
        assert!(IdMap::new(vec![IdRange::new(0, 100, 10), IdRange::new(10, 110, 5)], ok).is_ok());
    }
}
