//! Checkpoints, span geometry (SPEC §2.1–§2.6) and decompression of spans.

use std::ops::Range;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::types::{CompressedOffset, Compression, SpanId, UncompressedOffset, Ztoc};
use crate::zlib::{self, Flush, Inflater, Status};

/// Size of a checkpoint window: the 32 KiB deflate history.
pub const WINDOW_SIZE: usize = 32768;
const HEADER_LEN: usize = 12;
const RECORD_LEN: usize = 8 + 8 + 1 + WINDOW_SIZE;
/// Initial output buffer of an extraction; it doubles as data arrives.
const OUTPUT_START: usize = 1 << 20;

/// A place in the gzip stream where inflation can restart.
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// First full compressed byte after the block boundary.
    pub input: CompressedOffset,
    /// Uncompressed offset of the boundary.
    pub output: UncompressedOffset,
    /// Unconsumed bits of the byte at `input - 1` that belong to the next block (0..=7).
    pub bits: u8,
    /// The 32 KiB of output before `output`, zero-padded at the front.
    pub window: Box<[u8; WINDOW_SIZE]>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("input", &self.input.0)
            .field("output", &self.output.0)
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

/// The decoded gzip checkpoint blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GzipCheckpoints {
    /// Span size requested at build time.
    pub span_size: u64,
    /// All checkpoints, including checkpoint 0.
    pub checkpoints: Vec<Checkpoint>,
    /// Whether the blob used the legacy v1 layout (checkpoint 0 not serialized).
    pub legacy_v1: bool,
}

impl GzipCheckpoints {
    /// Decodes a checkpoint blob, accepting the v2 and legacy v1 layouts (SPEC §2.1).
    pub fn from_bytes(blob: &[u8]) -> Result<Self> {
        if blob.is_empty() {
            return Err(Error::EmptyCheckpoints);
        }
        let Some(header) = blob.get(..HEADER_LEN) else {
            return Err(Error::InvalidCheckpoints {
                len: blob.len(),
                count: 0,
            });
        };
        let count = i32::from_le_bytes([header[0], header[1], header[2], header[3]]) as i64;
        let span_size = i64::from_le_bytes([
            header[4], header[5], header[6], header[7], header[8], header[9], header[10],
            header[11],
        ]);
        let invalid = Error::InvalidCheckpoints {
            len: blob.len(),
            count,
        };
        let body = blob.len() - HEADER_LEN;
        if count < 0 || body % RECORD_LEN != 0 || span_size < 0 {
            return Err(invalid);
        }
        let stored = (body / RECORD_LEN) as i64;
        let legacy_v1 = if stored == count {
            false
        } else if stored + 1 == count {
            true
        } else {
            return Err(invalid);
        };
        let mut checkpoints = Vec::with_capacity(count as usize);
        if legacy_v1 {
            checkpoints.push(Checkpoint {
                input: CompressedOffset(10),
                output: UncompressedOffset(0),
                bits: 0,
                window: Box::new([0; WINDOW_SIZE]),
            });
        }
        for rec in blob[HEADER_LEN..].chunks_exact(RECORD_LEN) {
            let input =
                i64::from_le_bytes(rec[0..8].try_into().map_err(|_| Error::EmptyCheckpoints)?);
            let output =
                i64::from_le_bytes(rec[8..16].try_into().map_err(|_| Error::EmptyCheckpoints)?);
            let (Ok(input), Ok(output)) = (u64::try_from(input), u64::try_from(output)) else {
                return Err(Error::Inconsistent {
                    reason: "negative checkpoint offset",
                });
            };
            let bits = rec[16];
            if bits > 7 {
                return Err(Error::Inconsistent {
                    reason: "checkpoint bits out of range",
                });
            }
            let mut window = Box::new([0u8; WINDOW_SIZE]);
            window.copy_from_slice(&rec[17..]);
            checkpoints.push(Checkpoint {
                input: CompressedOffset(input),
                output: UncompressedOffset(output),
                bits,
                window,
            });
        }
        Ok(Self {
            span_size: span_size as u64,
            checkpoints,
            legacy_v1,
        })
    }

    /// Encodes in the layout it was read in (producers always create v2).
    pub fn to_bytes(&self) -> Vec<u8> {
        let skip = usize::from(self.legacy_v1 && !self.checkpoints.is_empty());
        let mut out = Vec::with_capacity(HEADER_LEN + (self.checkpoints.len() - skip) * RECORD_LEN);
        out.extend_from_slice(&(self.checkpoints.len() as i32).to_le_bytes());
        out.extend_from_slice(&(self.span_size as i64).to_le_bytes());
        for c in &self.checkpoints[skip..] {
            out.extend_from_slice(&(c.input.0 as i64).to_le_bytes());
            out.extend_from_slice(&(c.output.0 as i64).to_le_bytes());
            out.push(c.bits);
            out.extend_from_slice(&c.window[..]);
        }
        out
    }
}

/// Geometry of one span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The span.
    pub id: SpanId,
    /// Compressed byte range in the blob (the first byte may be shared with the previous span).
    pub compressed: Range<u64>,
    /// Uncompressed byte range in the tar stream.
    pub uncompressed: Range<u64>,
}

#[derive(Debug, Clone)]
enum Kind {
    Gzip(GzipCheckpoints),
    Tar { span_size: u64 },
}

/// Random-access information of a layer: checkpoints, spans and their digests.
///
/// Built from a [`Ztoc`] with [`Zinfo::from_ztoc`], which also runs the consistency checks a
/// snapshotter applies before lazily loading a layer (SPEC §1.4 step 5, §2.3).
#[derive(Debug, Clone)]
pub struct Zinfo {
    kind: Kind,
    blob_size: u64,
    tar_size: u64,
    digests: Vec<String>,
}

/// Something that can read bytes at an offset: a file, a buffer, a remote blob.
///
/// `read_exact_at` must fill `buf` completely or fail.
pub trait ReadAt {
    /// Reads exactly `buf.len()` bytes starting at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).ok();
        let src = start
            .and_then(|s| s.checked_add(buf.len()).map(|e| (s, e)))
            .and_then(|(s, e)| self.get(s..e))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

#[cfg(unix)]
impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Zinfo {
    /// Parses the checkpoints of a zTOC and checks that spans, digests and sizes agree.
    pub fn from_ztoc(ztoc: &Ztoc) -> Result<Self> {
        let ci = &ztoc.compression;
        let kind = match ci.algorithm {
            Compression::Gzip => Kind::Gzip(GzipCheckpoints::from_bytes(&ci.checkpoints)?),
            Compression::Uncompressed => {
                let (span_size, _size) = crate::fbs::decode_tar_zinfo(&ci.checkpoints)?;
                if span_size == 0 {
                    return Err(Error::ZeroSpanSizeForTar);
                }
                Kind::Tar { span_size }
            }
        };
        let z = Self {
            kind,
            blob_size: ztoc.compressed_archive_size,
            tar_size: ztoc.uncompressed_archive_size,
            digests: ci.span_digests.clone(),
        };
        let count = z.span_count();
        if count == 0 {
            return Err(Error::Inconsistent {
                reason: "layer has no spans",
            });
        }
        if u64::from(ci.max_span_id.0) + 1 != count {
            return Err(Error::Inconsistent {
                reason: "max_span_id does not match the checkpoints",
            });
        }
        if z.digests.len() as u64 != count {
            return Err(Error::Inconsistent {
                reason: "span digest count does not match the spans",
            });
        }
        for i in 0..count as u32 {
            let s = z.span_unchecked(SpanId(i));
            let last = u64::from(i) + 1 == count;
            if s.compressed.start > s.compressed.end
                || s.uncompressed.start > s.uncompressed.end
                || (!last
                    && (s.compressed.start >= s.compressed.end
                        || s.uncompressed.start >= s.uncompressed.end))
            {
                return Err(Error::Inconsistent {
                    reason: "span offsets are non-monotonic",
                });
            }
            if s.compressed.end > z.blob_size {
                return Err(Error::Inconsistent {
                    reason: "span extends past the end of the blob",
                });
            }
        }
        Ok(z)
    }

    /// Number of spans.
    pub fn span_count(&self) -> u64 {
        match &self.kind {
            Kind::Gzip(g) => g.checkpoints.len() as u64,
            Kind::Tar { span_size } => {
                let n = self.blob_size / span_size;
                if self.blob_size % span_size == 0 && n > 0 {
                    n
                } else {
                    n + 1
                }
            }
        }
    }

    /// The highest span id.
    pub fn max_span_id(&self) -> SpanId {
        SpanId(self.span_count().saturating_sub(1) as u32)
    }

    /// Span size used at build time.
    pub fn span_size(&self) -> u64 {
        match &self.kind {
            Kind::Gzip(g) => g.span_size,
            Kind::Tar { span_size } => *span_size,
        }
    }

    /// Layer compression.
    pub fn compression(&self) -> Compression {
        match self.kind {
            Kind::Gzip(_) => Compression::Gzip,
            Kind::Tar { .. } => Compression::Uncompressed,
        }
    }

    /// The gzip checkpoints (`None` for uncompressed layers).
    pub fn checkpoints(&self) -> Option<&GzipCheckpoints> {
        match &self.kind {
            Kind::Gzip(g) => Some(g),
            Kind::Tar { .. } => None,
        }
    }

    /// Size of the compressed blob.
    pub fn blob_size(&self) -> u64 {
        self.blob_size
    }

    /// `uncompressed_archive_size`.
    pub fn tar_size(&self) -> u64 {
        self.tar_size
    }

    /// Digest recorded for a span.
    pub fn span_digest(&self, id: SpanId) -> Option<&str> {
        self.digests.get(id.0 as usize).map(String::as_str)
    }

    /// The span holding uncompressed offset `o` (the last span for offsets past the end).
    pub fn span_of(&self, o: UncompressedOffset) -> SpanId {
        match &self.kind {
            Kind::Gzip(g) => {
                let i = g.checkpoints.partition_point(|c| c.output.0 <= o.0);
                SpanId(i.saturating_sub(1) as u32)
            }
            Kind::Tar { span_size } => {
                SpanId((o.0 / span_size).min(u64::from(self.max_span_id().0)) as u32)
            }
        }
    }

    /// Geometry of span `id`, or `None` if there is no such span.
    pub fn span(&self, id: SpanId) -> Option<Span> {
        (u64::from(id.0) < self.span_count()).then(|| self.span_unchecked(id))
    }

    fn span_unchecked(&self, id: SpanId) -> Span {
        let i = id.0 as usize;
        match &self.kind {
            Kind::Gzip(g) => {
                let c = &g.checkpoints[i];
                let start = c.input.0.saturating_sub(u64::from(c.bits != 0));
                let (cend, uend) = match g.checkpoints.get(i + 1) {
                    Some(n) => (n.input.0, n.output.0),
                    // The last checkpoint may sit in zero padding after the end-of-archive
                    // marker (a deflate block boundary past `tar_size`, e.g. GNU tar's 10 KiB
                    // records). The reference producer writes such zTOCs; that span simply
                    // holds no archive bytes.
                    None => (self.blob_size, self.tar_size.max(c.output.0)),
                };
                Span {
                    id,
                    compressed: start..cend,
                    uncompressed: c.output.0..uend,
                }
            }
            Kind::Tar { span_size } => {
                let start = (i as u64).saturating_mul(*span_size);
                let end = if u64::from(id.0) + 1 >= self.span_count() {
                    self.blob_size
                } else {
                    start.saturating_add(*span_size)
                };
                Span {
                    id,
                    compressed: start..end,
                    uncompressed: start..end,
                }
            }
        }
    }

    /// Bytes `[0, start of span 0)`: the gzip header, which belongs to no span.
    pub fn header_range(&self) -> Range<u64> {
        match &self.kind {
            Kind::Gzip(g) => 0..g.checkpoints.first().map_or(0, |c| c.input.0),
            Kind::Tar { .. } => 0..0,
        }
    }

    /// Checks that `header` (the bytes of [`Zinfo::header_range`]) is a gzip header.
    pub fn verify_header(&self, header: &[u8]) -> Result<()> {
        match &self.kind {
            Kind::Tar { .. } => Ok(()),
            Kind::Gzip(_) => {
                let mut inf = Inflater::new(zlib::AUTO).map_err(|_| Error::InvalidGzipHeader)?;
                let mut out = [0u8; 1];
                match inf.inflate(header, &mut out, Flush::Block) {
                    Ok((_, used, 0)) if used == header.len() && inf.data_type() & 128 != 0 => {
                        Ok(())
                    }
                    _ => Err(Error::InvalidGzipHeader),
                }
            }
        }
    }

    /// Verifies the digest of a span's compressed bytes.
    pub fn verify_span(&self, id: SpanId, compressed: &[u8]) -> Result<()> {
        let expected = self.span_digest(id).unwrap_or_default();
        let actual = sha256_digest(compressed);
        if actual != expected {
            return Err(Error::SpanDigestMismatch {
                span: id.0,
                expected: expected.to_owned(),
                actual,
            });
        }
        Ok(())
    }

    /// Verifies and decompresses one whole span given exactly its compressed bytes.
    pub fn decompress_span(&self, id: SpanId, compressed: &[u8]) -> Result<Vec<u8>> {
        let span = self.span(id).ok_or(Error::Inconsistent {
            reason: "span id out of range",
        })?;
        self.verify_span(id, compressed)?;
        let len = span.uncompressed.end - span.uncompressed.start;
        self.inflate_from(
            id,
            compressed,
            UncompressedOffset(span.uncompressed.start),
            len,
        )
    }

    /// Inflates `len` bytes starting at uncompressed offset `offset` from `compressed`, which
    /// must start at the compressed start of span `first` and cover every span up to the one
    /// holding the last wanted byte (SPEC §2.5). No digest is checked here.
    pub fn inflate_from(
        &self,
        first: SpanId,
        compressed: &[u8],
        offset: UncompressedOffset,
        len: u64,
    ) -> Result<Vec<u8>> {
        let span = self.span(first).ok_or(Error::Inconsistent {
            reason: "span id out of range",
        })?;
        let skip = offset
            .0
            .checked_sub(span.uncompressed.start)
            .ok_or(Error::Inconsistent {
                reason: "offset before the start of the span",
            })?;
        let want = usize::try_from(len).map_err(|_| Error::Inconsistent {
            reason: "range too large",
        })?;
        match &self.kind {
            Kind::Tar { .. } => {
                let s = usize::try_from(skip).ok();
                s.and_then(|s| compressed.get(s..s.checked_add(want)?))
                    .map(<[u8]>::to_vec)
                    .ok_or(Error::ShortSpan {
                        wanted: len,
                        got: compressed.len() as u64,
                    })
            }
            Kind::Gzip(g) => {
                let c = &g.checkpoints[first.0 as usize];
                inflate_gzip(c, compressed, skip, want)
            }
        }
    }

    /// Reads `len` uncompressed bytes at `offset`, fetching only the compressed bytes of the
    /// spans that hold them and verifying each span's digest.
    pub fn read_range<R: ReadAt + ?Sized>(
        &self,
        src: &R,
        offset: UncompressedOffset,
        len: u64,
    ) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = offset.0.checked_add(len).filter(|e| *e <= self.tar_size);
        if end.is_none() {
            return Err(Error::OutOfRange {
                offset: offset.0,
                len,
                size: self.tar_size,
            });
        }
        let first = self.span_of(offset);
        let last = self.span_of(UncompressedOffset(offset.0 + len - 1));
        let (Some(fs), Some(ls)) = (self.span(first), self.span(last)) else {
            return Err(Error::Inconsistent {
                reason: "span id out of range",
            });
        };
        let base = fs.compressed.start;
        let total = usize::try_from(ls.compressed.end - base).map_err(|_| Error::Inconsistent {
            reason: "range too large",
        })?;
        let mut buf = vec![0u8; total];
        src.read_exact_at(&mut buf, base)
            .map_err(Error::io("reading compressed spans"))?;
        for id in first.0..=last.0 {
            if let Some(s) = self.span(SpanId(id)) {
                let r = (s.compressed.start - base) as usize..(s.compressed.end - base) as usize;
                self.verify_span(SpanId(id), &buf[r])?;
            }
        }
        self.inflate_from(first, &buf, offset, len)
    }
}

/// SPEC §2.5: raw inflate primed from a checkpoint, crossing member boundaries.
fn inflate_gzip(c: &Checkpoint, compressed: &[u8], skip: u64, want: usize) -> Result<Vec<u8>> {
    let gz = |offset: usize, e: zlib::ZError| Error::Gzip {
        offset: c.input.0 + offset as u64,
        reason: e.describe(),
    };
    let mut inf = Inflater::new(zlib::RAW).map_err(|e| gz(0, e))?;
    let mut input = compressed;
    if c.bits != 0 {
        let Some((&b, rest)) = input.split_first() else {
            return Err(Error::ShortSpan {
                wanted: want as u64,
                got: 0,
            });
        };
        inf.prime(i32::from(c.bits), i32::from(b >> (8 - c.bits)))
            .map_err(|e| gz(0, e))?;
        input = rest;
    }
    inf.set_dictionary(&c.window[..]).map_err(|e| gz(0, e))?;

    // `want` comes from a zTOC (a file size, the archive size), which may lie: grow the output
    // as data is actually produced instead of allocating it all up front.
    let mut out = vec![0u8; want.min(OUTPUT_START)];
    let mut scratch = vec![0u8; if skip > 0 { WINDOW_SIZE } else { 0 }];
    let mut to_skip = skip;
    let mut produced = 0usize;
    let mut raw_mode = true;
    while produced < want {
        let (status, used, n) = if to_skip > 0 {
            let k = to_skip.min(WINDOW_SIZE as u64) as usize;
            let r = inf
                .inflate(input, &mut scratch[..k], Flush::None)
                .map_err(|e| gz(compressed.len() - input.len(), e))?;
            to_skip -= r.2 as u64;
            r
        } else {
            if produced == out.len() {
                let grow = out.len().max(WINDOW_SIZE).min(want - produced);
                out.resize(produced + grow, 0);
            }
            let r = inf
                .inflate(input, &mut out[produced..], Flush::None)
                .map_err(|e| gz(compressed.len() - input.len(), e))?;
            produced += r.2;
            r
        };
        input = &input[used..];
        match status {
            Status::StreamEnd => {
                if raw_mode {
                    // Raw inflate leaves the 8-byte gzip trailer of this member unread.
                    if input.len() < 8 {
                        break;
                    }
                    input = &input[8..];
                    raw_mode = false;
                }
                if input.is_empty() {
                    break;
                }
                inf.reset(zlib::AUTO)
                    .map_err(|e| gz(compressed.len() - input.len(), e))?;
            }
            Status::Ok | Status::BufError => {
                if used == 0 && n == 0 {
                    break;
                }
            }
        }
    }
    if produced < want {
        return Err(Error::ShortSpan {
            wanted: want as u64,
            got: produced as u64,
        });
    }
    Ok(out)
}
