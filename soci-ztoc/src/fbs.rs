//! FlatBuffers encoding of the zTOC and of the nested `TarZinfo` table.
//!
//! Writing drives `flatbuffers::FlatBufferBuilder` by hand in the order of SPEC §1.5, so the bytes
//! match the reference producer and the digest is stable. Reading uses a small bounds-checked
//! reader instead of generated code: strings must be read as raw bytes (they may be non-UTF-8,
//! which generated accessors treat as `&str`), and every offset in a hostile buffer must be
//! checked without `unsafe`.

use std::collections::BTreeMap;

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use crate::error::{Error, Result};
use crate::types::{
    Compression, CompressionInfo, EntryType, FileMetadata, SpanId, UncompressedOffset, Ztoc,
};

const fn slot(id: u16) -> u16 {
    4 + 2 * id
}

/// Serializes a zTOC (SPEC §1.5 order).
pub(crate) fn encode(z: &Ztoc) -> Vec<u8> {
    let mut b = FlatBufferBuilder::with_capacity(
        1024 + z.toc.len() * 160 + z.compression.checkpoints.len(),
    );
    let version = b.create_byte_string(z.version.as_bytes());
    let tool = b.create_byte_string(z.build_tool_identifier.as_bytes());

    let mut metas = Vec::with_capacity(z.toc.len());
    for m in z.toc.iter().rev() {
        metas.push(encode_meta(&mut b, m));
    }
    metas.reverse();
    let metadata = b.create_vector(&metas);
    let toc_start = b.start_table();
    b.push_slot_always(slot(0), metadata);
    let toc = b.end_table(toc_start);

    let ci = &z.compression;
    let checkpoints = b.create_vector::<u8>(&ci.checkpoints);
    let digests: Vec<_> = ci
        .span_digests
        .iter()
        .map(|d| b.create_byte_string(d.as_bytes()))
        .collect();
    let digests = b.create_vector(&digests);
    let ci_start = b.start_table();
    b.push_slot::<i32>(slot(1), ci.max_span_id.0 as i32, 0);
    b.push_slot_always(slot(2), digests);
    b.push_slot_always(slot(3), checkpoints);
    b.push_slot::<i8>(slot(0), compression_to_i8(ci.algorithm), 1);
    let ci = b.end_table(ci_start);

    let root = b.start_table();
    b.push_slot_always(slot(0), version);
    b.push_slot_always(slot(1), tool);
    b.push_slot_always(slot(4), toc);
    b.push_slot::<i64>(slot(2), z.compressed_archive_size as i64, 0);
    b.push_slot::<i64>(slot(3), z.uncompressed_archive_size as i64, 0);
    b.push_slot_always(slot(5), ci);
    let root = b.end_table(root);
    b.finish(root, None);
    b.finished_data().to_vec()
}

fn encode_meta<'a>(
    b: &mut FlatBufferBuilder<'a>,
    m: &FileMetadata,
) -> WIPOffset<flatbuffers::TableFinishedWIPOffset> {
    let name = b.create_byte_string(&m.name);
    let kind = b.create_byte_string(m.kind.as_str().as_bytes());
    let linkname = b.create_byte_string(&m.linkname);
    let uname = b.create_byte_string(&m.uname);
    let gname = b.create_byte_string(&m.gname);
    let mod_time = b.create_byte_string(m.mod_time.as_bytes());
    let mut xattrs = Vec::with_capacity(m.xattrs.len());
    for (k, v) in &m.xattrs {
        let key = b.create_byte_string(k);
        let value = b.create_byte_string(v);
        let t = b.start_table();
        b.push_slot_always(slot(0), key);
        b.push_slot_always(slot(1), value);
        xattrs.push(b.end_table(t));
    }
    let xattrs = b.create_vector(&xattrs);
    let t = b.start_table();
    b.push_slot_always(slot(0), name);
    b.push_slot_always(slot(1), kind);
    b.push_slot::<i64>(slot(2), m.uncompressed_offset.0 as i64, 0);
    b.push_slot::<i64>(slot(3), m.uncompressed_size as i64, 0);
    b.push_slot_always(slot(4), linkname);
    b.push_slot::<i64>(slot(5), m.mode, 0);
    b.push_slot::<u32>(slot(6), m.uid, 0);
    b.push_slot::<u32>(slot(7), m.gid, 0);
    b.push_slot_always(slot(8), uname);
    b.push_slot_always(slot(9), gname);
    b.push_slot_always(slot(10), mod_time);
    b.push_slot::<i64>(slot(11), m.devmajor, 0);
    b.push_slot::<i64>(slot(12), m.devminor, 0);
    b.push_slot_always(slot(13), xattrs);
    b.end_table(t)
}

fn compression_to_i8(c: Compression) -> i8 {
    match c {
        Compression::Gzip => 1,
        Compression::Uncompressed => 2,
    }
}

/// Serializes the nested `TarZinfo` table (SPEC §1.6).
pub(crate) fn encode_tar_zinfo(span_size: u64, size: u64) -> Vec<u8> {
    let mut b = FlatBufferBuilder::with_capacity(64);
    let t = b.start_table();
    b.push_slot::<i32>(slot(0), 2, 0);
    b.push_slot::<i64>(slot(1), span_size as i64, 0);
    b.push_slot::<i64>(slot(2), size as i64, 0);
    let t = b.end_table(t);
    b.finish(t, None);
    b.finished_data().to_vec()
}

// ---------------------------------------------------------------------------------------------
// Reading

fn bad(reason: &'static str) -> Error {
    Error::InvalidZtoc { reason }
}

fn read<const N: usize>(buf: &[u8], pos: usize) -> Result<[u8; N]> {
    let end = pos.checked_add(N).ok_or(bad("offset overflow"))?;
    buf.get(pos..end)
        .and_then(|s| s.try_into().ok())
        .ok_or(bad("offset out of bounds"))
}

fn u32_at(buf: &[u8], pos: usize) -> Result<u32> {
    read::<4>(buf, pos).map(u32::from_le_bytes)
}

/// A table inside a buffer, with its vtable located and bounds-checked.
#[derive(Clone, Copy)]
struct Table<'a> {
    buf: &'a [u8],
    pos: usize,
    vtable: usize,
    vtable_len: usize,
    object_len: usize,
}

impl<'a> Table<'a> {
    fn at(buf: &'a [u8], pos: usize) -> Result<Self> {
        let soff = i32::from_le_bytes(read::<4>(buf, pos)?) as i64;
        let vtable = usize::try_from(pos as i64 - soff).map_err(|_| bad("vtable out of bounds"))?;
        let vtable_len = u16::from_le_bytes(read::<2>(buf, vtable)?) as usize;
        let object_len = u16::from_le_bytes(read::<2>(buf, vtable + 2)?) as usize;
        if vtable_len < 4 || vtable_len % 2 != 0 || vtable + vtable_len > buf.len() {
            return Err(bad("malformed vtable"));
        }
        if object_len < 4 || pos + object_len > buf.len() {
            return Err(bad("table out of bounds"));
        }
        Ok(Self {
            buf,
            pos,
            vtable,
            vtable_len,
            object_len,
        })
    }

    fn root(buf: &'a [u8]) -> Result<Self> {
        let pos = u32_at(buf, 0)? as usize;
        Self::at(buf, pos)
    }

    /// Absolute position of field `id`, if present.
    fn field(&self, id: u16, size: usize) -> Result<Option<usize>> {
        let s = slot(id) as usize;
        if s + 2 > self.vtable_len {
            return Ok(None);
        }
        let off = u16::from_le_bytes(read::<2>(self.buf, self.vtable + s)?) as usize;
        if off == 0 {
            return Ok(None);
        }
        if off + size > self.object_len {
            return Err(bad("field outside its table"));
        }
        Ok(Some(self.pos + off))
    }

    fn scalar<const N: usize>(&self, id: u16) -> Result<Option<[u8; N]>> {
        match self.field(id, N)? {
            Some(p) => read::<N>(self.buf, p).map(Some),
            None => Ok(None),
        }
    }

    fn i64(&self, id: u16) -> Result<i64> {
        Ok(self.scalar::<8>(id)?.map(i64::from_le_bytes).unwrap_or(0))
    }

    fn u32(&self, id: u16) -> Result<u32> {
        Ok(self.scalar::<4>(id)?.map(u32::from_le_bytes).unwrap_or(0))
    }

    fn i32(&self, id: u16) -> Result<i32> {
        Ok(self.scalar::<4>(id)?.map(i32::from_le_bytes).unwrap_or(0))
    }

    /// Follows the uoffset stored in field `id`.
    fn indirect(&self, id: u16) -> Result<Option<usize>> {
        match self.field(id, 4)? {
            Some(p) => {
                let target = p
                    .checked_add(u32_at(self.buf, p)? as usize)
                    .ok_or(bad("offset overflow"))?;
                if target >= self.buf.len() {
                    return Err(bad("offset out of bounds"));
                }
                Ok(Some(target))
            }
            None => Ok(None),
        }
    }

    /// A string or byte vector field as raw bytes (absent ⇒ empty).
    fn bytes(&self, id: u16) -> Result<&'a [u8]> {
        match self.indirect(id)? {
            Some(p) => vector_bytes(self.buf, p),
            None => Ok(&[]),
        }
    }

    fn table(&self, id: u16) -> Result<Option<Table<'a>>> {
        match self.indirect(id)? {
            Some(p) => Table::at(self.buf, p).map(Some),
            None => Ok(None),
        }
    }

    /// Positions of the elements of a vector of offsets (tables or strings).
    fn offsets(&self, id: u16) -> Result<Vec<usize>> {
        let Some(p) = self.indirect(id)? else {
            return Ok(Vec::new());
        };
        let len = u32_at(self.buf, p)? as usize;
        let body = p + 4;
        if len > (self.buf.len().saturating_sub(body)) / 4 {
            return Err(bad("vector longer than buffer"));
        }
        (0..len)
            .map(|i| {
                let e = body + 4 * i;
                let t = e
                    .checked_add(u32_at(self.buf, e)? as usize)
                    .ok_or(bad("offset overflow"))?;
                if t >= self.buf.len() {
                    return Err(bad("offset out of bounds"));
                }
                Ok(t)
            })
            .collect()
    }
}

fn vector_bytes(buf: &[u8], p: usize) -> Result<&[u8]> {
    let len = u32_at(buf, p)? as usize;
    let start = p + 4;
    start
        .checked_add(len)
        .and_then(|end| buf.get(start..end))
        .ok_or(bad("string out of bounds"))
}

fn non_negative(v: i64, what: &'static str) -> Result<u64> {
    u64::try_from(v).map_err(|_| bad(what))
}

/// Parses zTOC bytes. Never panics; any structural problem is an [`Error::InvalidZtoc`].
pub(crate) fn decode(buf: &[u8]) -> Result<Ztoc> {
    let root = Table::root(buf)?;
    let version = String::from_utf8_lossy(root.bytes(0)?).into_owned();
    let build_tool_identifier = String::from_utf8_lossy(root.bytes(1)?).into_owned();
    let compressed_archive_size = non_negative(root.i64(2)?, "negative compressed_archive_size")?;
    let uncompressed_archive_size =
        non_negative(root.i64(3)?, "negative uncompressed_archive_size")?;

    let mut toc = Vec::new();
    if let Some(t) = root.table(4)? {
        let entries = t.offsets(0)?;
        toc.reserve(entries.len());
        for p in entries {
            toc.push(decode_meta(Table::at(buf, p)?)?);
        }
    }

    let ci = root.table(5)?.ok_or(bad("missing compression_info"))?;
    let algorithm = match ci.scalar::<1>(0)?.map(|b| b[0] as i8).unwrap_or(1) {
        1 => Compression::Gzip,
        2 => Compression::Uncompressed,
        _ => return Err(bad("unexpected compression algorithm")),
    };
    let max_span_id = ci.i32(1)?;
    let max_span_id = u32::try_from(max_span_id).map_err(|_| bad("negative max_span_id"))?;
    let span_digests = ci
        .offsets(2)?
        .into_iter()
        .map(|p| vector_bytes(buf, p).map(|b| String::from_utf8_lossy(b).into_owned()))
        .collect::<Result<Vec<_>>>()?;
    let checkpoints = ci.bytes(3)?.to_vec();

    Ok(Ztoc {
        version,
        build_tool_identifier,
        compressed_archive_size,
        uncompressed_archive_size,
        toc,
        compression: CompressionInfo {
            algorithm,
            max_span_id: SpanId(max_span_id),
            span_digests,
            checkpoints,
        },
    })
}

fn decode_meta(t: Table<'_>) -> Result<FileMetadata> {
    let kind = EntryType::from_bytes(t.bytes(1)?).ok_or(bad("unknown entry type"))?;
    let mut xattrs = BTreeMap::new();
    for p in t.offsets(13)? {
        let x = Table::at(t.buf, p)?;
        xattrs.insert(x.bytes(0)?.to_vec(), x.bytes(1)?.to_vec());
    }
    Ok(FileMetadata {
        name: t.bytes(0)?.to_vec(),
        kind,
        uncompressed_offset: UncompressedOffset(non_negative(
            t.i64(2)?,
            "negative uncompressed_offset",
        )?),
        uncompressed_size: non_negative(t.i64(3)?, "negative uncompressed_size")?,
        linkname: t.bytes(4)?.to_vec(),
        mode: t.i64(5)?,
        uid: t.u32(6)?,
        gid: t.u32(7)?,
        uname: t.bytes(8)?.to_vec(),
        gname: t.bytes(9)?.to_vec(),
        mod_time: String::from_utf8_lossy(t.bytes(10)?).into_owned(),
        devmajor: t.i64(11)?,
        devminor: t.i64(12)?,
        xattrs,
    })
}

/// Parses the nested `TarZinfo` table: (span_size, size).
pub(crate) fn decode_tar_zinfo(buf: &[u8]) -> Result<(u64, u64)> {
    let t = Table::root(buf)?;
    let span_size = non_negative(t.i64(1)?, "negative tar zinfo span size")?;
    let size = non_negative(t.i64(2)?, "negative tar zinfo size")?;
    Ok((span_size, size))
}
