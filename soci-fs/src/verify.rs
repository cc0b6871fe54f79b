//! Re-parsing a file's tar header before its first read (SPEC §5.8): span digests protect
//! content, this protects the metadata the zTOC claims.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::tree::{FileRecord, Node};

const ATTRS: &str = "file attributes do not match tar header";

fn mismatch(rec: &FileRecord, reason: &'static str) -> Error {
    Error::HeaderMismatch {
        name: String::from_utf8_lossy(&rec.raw_name).into_owned(),
        reason,
    }
}

/// Checks the header bytes `[header_offset, offset)` of a regular file against its node.
pub(crate) fn verify_header(bytes: &[u8], node: &Node, rec: &FileRecord) -> Result<()> {
    let size_err = || mismatch(rec, "incorrect tar header size");
    let attr_err = || mismatch(rec, ATTRS);
    let mut archive = tar::Archive::new(bytes);
    let mut entries = archive.entries().map_err(|_| size_err())?;
    let mut entry = entries
        .next()
        .ok_or_else(size_err)?
        .map_err(|_| size_err())?;
    if entry.raw_file_position() != rec.header_size {
        return Err(size_err());
    }
    if *entry.path_bytes() != *rec.raw_name {
        return Err(mismatch(rec, "file name does not match tar header"));
    }
    let mut pax_mtime = None;
    let mut pax_uid = None;
    let mut pax_gid = None;
    let mut xattrs = BTreeSet::new();
    if let Some(exts) = entry.pax_extensions().map_err(|_| attr_err())? {
        for ext in exts {
            let ext = ext.map_err(|_| attr_err())?;
            let (k, v) = (ext.key_bytes(), ext.value_bytes());
            match k {
                b"mtime" => pax_mtime = std::str::from_utf8(v).ok().map(str::to_owned),
                b"uid" => {
                    pax_uid = std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<u32>().ok())
                }
                b"gid" => {
                    pax_gid = std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<u32>().ok())
                }
                _ => {
                    if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                        xattrs.insert((name.to_vec(), v.to_vec()));
                    }
                }
            }
        }
    }
    let raw = entry.header().as_bytes();
    let field = |r: std::ops::Range<usize>| numeric(&raw[r]).ok_or_else(attr_err);
    let mode = field(100..108)? as u32 & 0o7777;
    let uid = match pax_uid {
        Some(u) => u,
        None => field(108..116)? as u32,
    };
    let gid = match pax_gid {
        Some(g) => g,
        None => field(116..124)? as u32,
    };
    let mtime_secs = match pax_mtime.as_deref().and_then(|s| s.split('.').next()) {
        Some(s) => s.parse::<i64>().map_err(|_| attr_err())?,
        None => field(136..148)? as i64,
    };
    let link_ok = entry
        .link_name_bytes()
        .is_none_or(|l| l.is_empty() || *l == *node.link);
    let dev_major = field(329..337)? as u32;
    let dev_minor = field(337..345)? as u32;
    let want: BTreeSet<(Vec<u8>, Vec<u8>)> = node
        .xattrs
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    if entry.size() != node.size
        || mode != node.mode
        || uid != node.uid
        || gid != node.gid
        || mtime_secs != node.mtime.0
        || !link_ok
        || (dev_major, dev_minor) != (node.dev.0, node.dev.1)
        || xattrs != want
    {
        return Err(attr_err());
    }
    Ok(())
}

/// A tar numeric field as the zTOC builder reads it: octal with NUL/space padding (empty means
/// 0), or base-256 when the high bit of the first byte is set.
fn numeric(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|b| b & 0x80 != 0) {
        if f[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut v: u64 = u64::from(f[0] & 0x3f);
        for b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let s: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|b| *b == b' ' || *b == 0)
        .take_while(|b| *b != b' ' && *b != 0)
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::numeric;

    #[test]
    fn numeric_fields() {
        assert_eq!(numeric(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(numeric(b"0000644\0"), Some(0o644));
        assert_eq!(numeric(b" 17 \0\0\0\0"), Some(0o17));
        assert_eq!(numeric(&[0x80, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(numeric(b"9x\0\0\0\0\0\0"), None);
    }
}
