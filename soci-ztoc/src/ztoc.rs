use crate::error::{Error, Result};
use crate::types::{EntryType, FileMetadata, UncompressedOffset, Ztoc};
use crate::zinfo::{sha256_digest, ReadAt, Zinfo};

/// Where a TOC entry sits in the uncompressed tar, reconstructed as SPEC §1.4 describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryLayout {
    /// Index of the entry in [`Ztoc::toc`].
    pub index: usize,
    /// Offset of the entry's first header block.
    pub header_offset: u64,
    /// Bytes of all header blocks of the entry (PAX, GNU long names, the header itself).
    pub header_size: u64,
}

const MAX_LINK_HOPS: usize = 40;

impl Ztoc {
    /// Decodes zTOC bytes. Rejects structurally invalid buffers; never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        crate::fbs::decode(bytes)
    }

    /// Encodes the zTOC. The same zTOC always gives the same bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::fbs::encode(self)
    }

    /// `sha256:<hex>` of [`Ztoc::to_bytes`]: the zTOC's descriptor digest.
    pub fn digest(&self) -> String {
        sha256_digest(&self.to_bytes())
    }

    /// Parses the checkpoints and checks spans (see [`Zinfo::from_ztoc`]).
    pub fn zinfo(&self) -> Result<Zinfo> {
        Zinfo::from_ztoc(self)
    }

    /// Entries in offset order with their reconstructed header positions (SPEC §1.4 step 3).
    /// Fails with [`Error::InvalidTocEntry`] when the entries cannot describe one tar stream.
    pub fn layout(&self) -> Result<Vec<EntryLayout>> {
        let mut order: Vec<usize> = (0..self.toc.len()).collect();
        order.sort_by_key(|&i| self.toc[i].uncompressed_offset);
        let mut next_header = 0u64;
        let mut out = Vec::with_capacity(order.len());
        for i in order {
            let m = &self.toc[i];
            let off = m.uncompressed_offset.0;
            let invalid = || Error::InvalidTocEntry {
                name: m.name_lossy().into_owned(),
                offset: off,
            };
            if next_header > off {
                return Err(invalid());
            }
            out.push(EntryLayout {
                index: i,
                header_offset: next_header,
                header_size: off - next_header,
            });
            next_header = off
                .checked_add(m.uncompressed_size)
                .and_then(|e| e.checked_next_multiple_of(512))
                .ok_or_else(invalid)?;
        }
        Ok(out)
    }

    /// The last TOC entry with exactly this raw name.
    pub fn find(&self, name: &[u8]) -> Option<&FileMetadata> {
        self.toc.iter().rev().find(|m| m.name == name)
    }

    /// Resolves `name` to the entry that holds its content, following symlinks and hardlinks by
    /// exact name (SPEC §2.5), then by cleaned path relative to the link.
    pub fn resolve(&self, name: &[u8]) -> Result<&FileMetadata> {
        let shown = || String::from_utf8_lossy(name).into_owned();
        let mut m = self
            .find(name)
            .or_else(|| self.find_clean(&clean(name)))
            .ok_or_else(|| Error::FileNotFound(shown()))?;
        for _ in 0..MAX_LINK_HOPS {
            if m.linkname.is_empty() || !matches!(m.kind, EntryType::Symlink | EntryType::Hardlink)
            {
                return Ok(m);
            }
            let target = &m.linkname;
            let next = self.find(target).or_else(|| {
                let joined = if m.kind == EntryType::Symlink && !target.starts_with(b"/") {
                    let c = clean(&m.name);
                    let dir = c.rsplit_once_byte(b'/').map(|(d, _)| d).unwrap_or(b"");
                    let mut j = dir.to_vec();
                    j.push(b'/');
                    j.extend_from_slice(target);
                    j
                } else {
                    target.clone()
                };
                self.find_clean(&clean(&joined))
            });
            m = next.ok_or_else(|| Error::FileNotFound(String::from_utf8_lossy(target).into()))?;
        }
        Err(Error::LinkLoop(shown()))
    }

    fn find_clean(&self, cleaned: &[u8]) -> Option<&FileMetadata> {
        self.toc.iter().rev().find(|m| clean(&m.name) == cleaned)
    }

    /// Extracts the content of a file (following links) through the checkpoints, reading only
    /// the compressed spans that hold it.
    pub fn extract_file<R: ReadAt + ?Sized>(
        &self,
        zinfo: &Zinfo,
        layer: &R,
        name: &[u8],
    ) -> Result<Vec<u8>> {
        let m = self.resolve(name)?;
        if m.kind != EntryType::Regular {
            return Ok(Vec::new());
        }
        zinfo.read_range(layer, m.uncompressed_offset, m.uncompressed_size)
    }

    /// Reads any uncompressed byte range of the tar stream.
    pub fn read_range<R: ReadAt + ?Sized>(
        &self,
        zinfo: &Zinfo,
        layer: &R,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        zinfo.read_range(layer, UncompressedOffset(offset), len)
    }
}

trait RsplitOnceByte {
    fn rsplit_once_byte(&self, b: u8) -> Option<(&[u8], &[u8])>;
}

impl RsplitOnceByte for Vec<u8> {
    fn rsplit_once_byte(&self, b: u8) -> Option<(&[u8], &[u8])> {
        let i = self.iter().rposition(|c| *c == b)?;
        Some((&self[..i], &self[i + 1..]))
    }
}

/// `clean("/" + name)` without the leading `/`: the path the snapshotter uses (SPEC §3.7).
/// `..` never climbs above the root.
pub fn clean(name: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for p in name.split(|c| *c == b'/') {
        match p {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join(&b'/')
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn clean_confines_to_root() {
        assert_eq!(clean(b"./etc//passwd"), b"etc/passwd");
        assert_eq!(clean(b"../../etc/x/"), b"etc/x");
        assert_eq!(clean(b"/a/b/../c"), b"a/c");
        assert_eq!(clean(b"."), b"");
    }
}
