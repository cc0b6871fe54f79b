//! Building a zTOC from a layer in one streaming pass (SPEC §2.2, §3).

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};
use std::sync::mpsc;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::fbs;
use crate::types::{
    Compression, CompressionInfo, EntryType, FileMetadata, SpanId, UncompressedOffset, Ztoc,
    DEFAULT_BUILD_TOOL_IDENTIFIER, DEFAULT_SPAN_SIZE, VERSION,
};
use crate::zinfo::{Checkpoint, GzipCheckpoints, WINDOW_SIZE};
use crate::zlib::{self, Flush, Inflater, Status};
use crate::{CompressedOffset, Zinfo};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const INPUT_CHUNK: usize = 64 * 1024;
/// Output space offered to one inflate call, after the 32 KiB of history.
const OUTPUT_CHUNK: usize = 128 * 1024;
const BLOCK: u64 = 512;

/// Builds a [`Ztoc`] from a layer blob (gzip or plain tar) read once, front to back.
///
/// ```
/// # fn main() -> soci_ztoc::Result<()> {
/// # let layer: &[u8] = &[0u8; 1024];
/// let ztoc = soci_ztoc::ZtocBuilder::new().span_size(1 << 20).build(layer)?;
/// assert_eq!(ztoc.toc.len(), 0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ZtocBuilder {
    span_size: u64,
    build_tool_identifier: String,
}

impl Default for ZtocBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ZtocBuilder {
    /// A builder with the default span size (4 MiB) and build tool identifier.
    pub fn new() -> Self {
        Self {
            span_size: DEFAULT_SPAN_SIZE,
            build_tool_identifier: DEFAULT_BUILD_TOOL_IDENTIFIER.to_owned(),
        }
    }

    /// Uncompressed bytes between checkpoints. By default 4 MiB. 0 puts a checkpoint at every
    /// deflate block boundary (gzip only; plain tar layers reject 0).
    pub fn span_size(&mut self, span_size: u64) -> &mut Self {
        self.span_size = span_size;
        self
    }

    /// Free text identifying the producer. By default `AWS SOCI CLI v0.2`, the reference CLI's
    /// value, so indexes built by either tool compare equal.
    pub fn build_tool_identifier(&mut self, id: impl Into<String>) -> &mut Self {
        self.build_tool_identifier = id.into();
        self
    }

    /// Reads the whole layer and builds its zTOC. Gzip vs tar is detected from the bytes.
    pub fn build<R: Read>(&self, mut layer: R) -> Result<Ztoc> {
        // Sniff the magic from the first 4 bytes, however the reader chunks them (a network
        // body or pipe may return 1 byte first).
        let mut magic = [0u8; 4];
        let n = read_full(&mut layer, &mut magic).map_err(Error::io("reading layer"))?;
        let head = &magic[..n];
        if head.starts_with(&ZSTD_MAGIC) {
            return Err(Error::UnsupportedCompression("zstd"));
        }
        let r = BufReader::with_capacity(INPUT_CHUNK, head.chain(layer));
        if head.starts_with(&GZIP_MAGIC) {
            self.build_gzip(r)
        } else {
            self.build_tar(r)
        }
    }

    fn build_gzip<R: Read>(&self, r: R) -> Result<Ztoc> {
        // Span digests are computed on a helper thread: sha256 of the compressed bytes is ~10%
        // of the work, and inflating is inherently serial.
        let (toc, tar_size, checkpoints, digests, blob_size) = std::thread::scope(|scope| {
            let (hash, worker) = SpanDigests::spawn(scope);
            let mut gz = GzipIndexer::new(r, self.span_size, hash)?;
            let (toc, tar_size) = walk_tar(&mut gz)?;
            io::copy(&mut gz, &mut io::sink()).map_err(unwrap_indexer_error)?;
            let (checkpoints, blob_size) = gz.finish()?;
            let digests = worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            Ok::<_, Error>((toc, tar_size, checkpoints, digests, blob_size))
        })?;
        let max = checkpoints.len().saturating_sub(1) as u32;
        let blob = GzipCheckpoints {
            span_size: self.span_size,
            checkpoints,
            legacy_v1: false,
        }
        .to_bytes();
        self.finish(
            Compression::Gzip,
            blob_size,
            tar_size,
            toc,
            max,
            digests,
            blob,
        )
    }

    fn build_tar<R: Read>(&self, r: R) -> Result<Ztoc> {
        if self.span_size == 0 {
            return Err(Error::ZeroSpanSizeForTar);
        }
        let mut h = SpanHasher::new(r, self.span_size);
        let (toc, tar_size) = walk_tar(&mut h)?;
        io::copy(&mut h, &mut io::sink()).map_err(Error::io("reading layer"))?;
        let (digests, size) = h.finish();
        if size == 0 {
            return Err(Error::TruncatedTar { offset: 0 });
        }
        let max = digests.len().saturating_sub(1) as u32;
        let blob = fbs::encode_tar_zinfo(self.span_size, size);
        self.finish(
            Compression::Uncompressed,
            size,
            tar_size,
            toc,
            max,
            digests,
            blob,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        algorithm: Compression,
        blob_size: u64,
        tar_size: u64,
        toc: Vec<FileMetadata>,
        max_span_id: u32,
        span_digests: Vec<String>,
        checkpoints: Vec<u8>,
    ) -> Result<Ztoc> {
        let ztoc = Ztoc {
            version: VERSION.to_owned(),
            build_tool_identifier: self.build_tool_identifier.clone(),
            compressed_archive_size: blob_size,
            uncompressed_archive_size: tar_size,
            toc,
            compression: CompressionInfo {
                algorithm,
                max_span_id: SpanId(max_span_id),
                span_digests,
                checkpoints,
            },
        };
        // Never hand out a zTOC our own reader would reject.
        Zinfo::from_ztoc(&ztoc)?;
        Ok(ztoc)
    }
}

/// Errors raised inside a `Read` impl travel as `io::Error`; get the typed error back.
fn unwrap_indexer_error(e: io::Error) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        if let Some(Ok(err)) = e.into_inner().map(|b| b.downcast::<Error>()) {
            return *err;
        }
        return Error::Io {
            context: "reading layer",
            source: io::Error::other("lost error"),
        };
    }
    Error::Io {
        context: "reading layer",
        source: e,
    }
}

// ---------------------------------------------------------------------------------------------
// gzip: inflate with Z_BLOCK, record checkpoints, hash spans, hand the output to the tar walk.

struct GzipIndexer<R> {
    src: R,
    inbuf: Vec<u8>,
    in_pos: usize,
    in_len: usize,
    src_eof: bool,
    inf: Inflater,
    /// Sliding output buffer: `out[..out_len]` ends with (at least) the last 32 KiB of output.
    /// Inflate writes into `out[out_len..]`; zlib-rs may scribble past the bytes it reports
    /// as produced, so history must never sit after the write position (a ring buffer used
    /// as zlib's output, as in zran.c, gets its oldest bytes clobbered).
    out: Vec<u8>,
    out_len: usize,
    pending: std::ops::Range<usize>,
    totin: u64,
    totout: u64,
    last: u64,
    span_size: u64,
    last_byte: u8,
    checkpoints: Vec<Checkpoint>,
    hash: SpanDigests,
    done: bool,
}

impl<R: Read> GzipIndexer<R> {
    fn new(src: R, span_size: u64, hash: SpanDigests) -> Result<Self> {
        let inf = Inflater::new(zlib::AUTO).map_err(|e| Error::Gzip {
            offset: 0,
            reason: e.describe(),
        })?;
        Ok(Self {
            src,
            inbuf: vec![0; INPUT_CHUNK],
            in_pos: 0,
            in_len: 0,
            src_eof: false,
            inf,
            // Starts with 32 KiB of zeros: the window of checkpoints near the start is
            // zero-padded at the front (SPEC §2.1).
            out: vec![0; WINDOW_SIZE + OUTPUT_CHUNK],
            out_len: WINDOW_SIZE,
            pending: 0..0,
            totin: 0,
            totout: 0,
            last: 0,
            span_size,
            last_byte: 0,
            checkpoints: Vec::new(),
            hash,
            done: false,
        })
    }

    /// Refills the input buffer if it is empty. Returns false at end of input.
    fn refill(&mut self) -> Result<bool> {
        if self.in_pos < self.in_len {
            return Ok(true);
        }
        if self.src_eof {
            return Ok(false);
        }
        loop {
            match self.src.read(&mut self.inbuf) {
                Ok(0) => {
                    self.src_eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.in_pos = 0;
                    self.in_len = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("reading layer")(e)),
            }
        }
    }

    /// One inflate call; may produce output into `pending`.
    fn step(&mut self) -> Result<()> {
        if self.out_len == self.out.len() {
            self.out
                .copy_within(self.out_len - WINDOW_SIZE..self.out_len, 0);
            self.out_len = WINDOW_SIZE;
        }
        self.refill()?;
        // Only a block boundary reached at totout == 0 or more than `span_size` bytes after the
        // last checkpoint becomes a checkpoint (SPEC §2.2). Until then, inflate without
        // stopping at every block (Z_BLOCK costs a return, and zlib's window copy, per block),
        // but never past `last + span_size`: the checkpoints are exactly those of Z_BLOCK
        // throughout. (A boundary at exactly `last + span_size` does not qualify.)
        let since = self.totout - self.last;
        let mut out_end = self.out.len();
        let flush = if self.totout == 0 || since >= self.span_size {
            Flush::Block
        } else {
            let room = usize::try_from(self.span_size - since).unwrap_or(usize::MAX);
            out_end = out_end.min(self.out_len.saturating_add(room));
            Flush::None
        };
        let input = &self.inbuf[self.in_pos..self.in_len];
        let (status, used, produced) = self
            .inf
            .inflate(input, &mut self.out[self.out_len..out_end], flush)
            .map_err(|e| Error::Gzip {
                offset: self.totin,
                reason: e.describe(),
            })?;
        if used > 0 {
            let consumed = &self.inbuf[self.in_pos..self.in_pos + used];
            self.hash.update(consumed);
            self.last_byte = consumed[used - 1];
        }
        self.in_pos += used;
        self.totin += used as u64;
        self.totout += produced as u64;
        self.pending = self.out_len..self.out_len + produced;
        self.out_len += produced;

        match status {
            Status::StreamEnd => {
                if self.refill()? {
                    // Another gzip member follows (pigz, eStargz...).
                    self.inf.reset(zlib::AUTO).map_err(|e| Error::Gzip {
                        offset: self.totin,
                        reason: e.describe(),
                    })?;
                } else {
                    self.done = true;
                }
            }
            Status::Ok | Status::BufError => {
                if used == 0 && produced == 0 && self.in_pos >= self.in_len && !self.refill()? {
                    return Err(Error::TruncatedGzip { offset: self.totin });
                }
                let dt = self.inf.data_type();
                if dt & 128 != 0
                    && dt & 64 == 0
                    && (self.totout == 0 || self.totout - self.last > self.span_size)
                {
                    self.checkpoint((dt & 7) as u8);
                }
            }
        }
        Ok(())
    }

    fn checkpoint(&mut self, bits: u8) {
        let mut window = Box::new([0u8; WINDOW_SIZE]);
        window.copy_from_slice(&self.out[self.out_len - WINDOW_SIZE..self.out_len]);
        self.checkpoints.push(Checkpoint {
            input: CompressedOffset(self.totin),
            output: UncompressedOffset(self.totout),
            bits,
            window,
        });
        self.last = self.totout;
        // The partial byte before `in` belongs to both neighbouring spans.
        self.hash.cut((bits != 0).then_some(self.last_byte));
    }

    /// Checkpoints and the compressed size; ends the digest stream.
    fn finish(self) -> Result<(Vec<Checkpoint>, u64)> {
        if !self.done {
            return Err(Error::TruncatedGzip { offset: self.totin });
        }
        self.hash.finish();
        Ok((self.checkpoints, self.totin))
    }
}

/// Bytes handed to the digest thread per message.
const HASH_BATCH: usize = 512 * 1024;

enum HashMsg {
    /// More compressed bytes of the current span.
    Data(Vec<u8>),
    /// A checkpoint: the current span ends; the next starts, with the shared partial byte.
    Cut(Option<u8>),
}

/// The producer side of the span digest thread: batches consumed compressed bytes and
/// checkpoint cuts, in stream order. Buffers come back through `free` to be reused.
struct SpanDigests {
    tx: mpsc::SyncSender<HashMsg>,
    free: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    /// False until the first checkpoint: the gzip header belongs to no span.
    active: bool,
}

impl SpanDigests {
    fn spawn<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
    ) -> (Self, std::thread::ScopedJoinHandle<'scope, Vec<String>>) {
        let (tx, rx) = mpsc::sync_channel::<HashMsg>(4);
        let (free_tx, free) = mpsc::sync_channel::<Vec<u8>>(4);
        let worker = scope.spawn(move || {
            let mut digests = Vec::new();
            let mut cur: Option<Sha256> = None;
            for msg in rx {
                match msg {
                    HashMsg::Data(mut v) => {
                        if let Some(h) = cur.as_mut() {
                            h.update(&v);
                        }
                        v.clear();
                        let _ = free_tx.try_send(v);
                    }
                    HashMsg::Cut(shared) => {
                        if let Some(h) = cur.take() {
                            digests.push(digest_of(h));
                        }
                        let mut h = Sha256::new();
                        if let Some(b) = shared {
                            h.update([b]);
                        }
                        cur = Some(h);
                    }
                }
            }
            if let Some(h) = cur {
                digests.push(digest_of(h));
            }
            digests
        });
        let me = Self {
            tx,
            free,
            buf: Vec::with_capacity(HASH_BATCH),
            active: false,
        };
        (me, worker)
    }

    fn update(&mut self, bytes: &[u8]) {
        if !self.active {
            return;
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= HASH_BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let next = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(HASH_BATCH));
        let data = std::mem::replace(&mut self.buf, next);
        // A send only fails if the worker panicked; join() reports that.
        let _ = self.tx.send(HashMsg::Data(data));
    }

    fn cut(&mut self, shared: Option<u8>) {
        self.flush();
        let _ = self.tx.send(HashMsg::Cut(shared));
        self.active = true;
    }

    /// Sends what is left; dropping the sender ends the worker.
    fn finish(mut self) {
        self.flush();
    }
}

impl<R: Read> Read for GzipIndexer<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.pending.is_empty() {
                let n = buf.len().min(self.pending.len());
                let start = self.pending.start;
                buf[..n].copy_from_slice(&self.out[start..start + n]);
                self.pending.start += n;
                return Ok(n);
            }
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            self.step().map_err(io::Error::other)?;
        }
    }
}

fn digest_of(h: Sha256) -> String {
    format!("sha256:{}", hex::encode(h.finalize()))
}

// ---------------------------------------------------------------------------------------------
// plain tar: hash fixed-size spans as the bytes pass.

struct SpanHasher<R> {
    src: R,
    span_size: u64,
    in_span: u64,
    total: u64,
    hasher: Sha256,
    digests: Vec<String>,
}

impl<R: Read> SpanHasher<R> {
    fn new(src: R, span_size: u64) -> Self {
        Self {
            src,
            span_size,
            in_span: 0,
            total: 0,
            hasher: Sha256::new(),
            digests: Vec::new(),
        }
    }

    fn finish(mut self) -> (Vec<String>, u64) {
        if self.in_span > 0 || self.digests.is_empty() {
            self.digests.push(digest_of(self.hasher));
        }
        (self.digests, self.total)
    }
}

impl<R: Read> Read for SpanHasher<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let room = (self.span_size - self.in_span).min(rest.len() as u64) as usize;
            self.hasher.update(&rest[..room]);
            self.in_span += room as u64;
            rest = &rest[room..];
            if self.in_span == self.span_size {
                let h = std::mem::take(&mut self.hasher);
                self.digests.push(digest_of(h));
                self.in_span = 0;
            }
        }
        self.total += n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// The tar walk.

struct Counter<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn tar_error(e: io::Error, pos: u64) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        return unwrap_indexer_error(e);
    }
    let msg = e.to_string();
    if e.kind() == io::ErrorKind::UnexpectedEof
        || msg.contains("failed to read entire block")
        || msg.contains("unexpected EOF")
    {
        return Error::TruncatedTar { offset: pos };
    }
    Error::Tar(e)
}

/// Walks the tar, returning its TOC and the uncompressed bytes consumed through the
/// end-of-archive marker (SPEC §3.2).
fn walk_tar<R: Read>(r: &mut R) -> Result<(Vec<FileMetadata>, u64)> {
    let mut counter = Counter { inner: r, pos: 0 };
    let mut toc = Vec::new();
    let mut expected_next = 0u64;
    {
        let mut archive = tar::Archive::new(&mut counter);
        let entries = archive.entries().map_err(Error::Tar)?;
        for entry in entries {
            let mut entry = entry.map_err(|e| tar_error(e, 0))?;
            let meta = entry_metadata(&mut entry)?;
            expected_next =
                meta.uncompressed_offset.0 + meta.uncompressed_size.div_ceil(BLOCK) * BLOCK;
            toc.push(meta);
        }
    }
    // The tar crate stops after the first zero block; Go's reader (whose offsets the format
    // records) also consumes a second one when present.
    let mut pos = counter.pos;
    if pos == expected_next + BLOCK {
        let mut block = [0u8; BLOCK as usize];
        let n = read_full(&mut counter, &mut block).map_err(|e| tar_error(e, pos))?;
        match n {
            0 => {}
            512 if block.iter().all(|b| *b == 0) => pos += BLOCK,
            512 => {
                return Err(Error::Tar(io::Error::other(
                    "zero block followed by a header",
                )))
            }
            _ => {
                return Err(Error::TruncatedTar {
                    offset: pos + n as u64,
                })
            }
        }
    }
    Ok((toc, pos))
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn non_empty(v: Option<&Vec<u8>>) -> Option<&[u8]> {
    v.map(Vec::as_slice).filter(|v| !v.is_empty())
}

fn entry_metadata<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<FileMetadata> {
    let mut pax = BTreeMap::new();
    if let Some(exts) = entry.pax_extensions().map_err(Error::Tar)? {
        for ext in exts {
            let ext = ext.map_err(Error::Tar)?;
            pax.insert(ext.key_bytes().to_vec(), ext.value_bytes().to_vec());
        }
    }
    let hdr = entry.header();
    let raw = hdr.as_bytes();
    let flag = raw[156];
    let name = match non_empty(pax.get(b"path".as_slice())) {
        Some(p) => p.to_vec(),
        None => entry.path_bytes().into_owned(),
    };
    let lossy = || String::from_utf8_lossy(&name).into_owned();
    if pax.keys().any(|k| k.starts_with(b"GNU.sparse.")) {
        return Err(Error::SparseEntry { name: lossy() });
    }
    let kind = match flag {
        b'0' => EntryType::Regular,
        0 if name.ends_with(b"/") => EntryType::Dir,
        0 => EntryType::Regular,
        b'1' => EntryType::Hardlink,
        b'2' => EntryType::Symlink,
        b'3' => EntryType::Char,
        b'4' => EntryType::Block,
        b'5' => EntryType::Dir,
        b'6' => EntryType::Fifo,
        other => return Err(Error::UnsupportedEntry(other)),
    };
    let size = entry.size();
    if kind != EntryType::Regular && size != 0 {
        return Err(Error::HeaderOnlyWithSize {
            name: lossy(),
            kind: kind.as_str(),
            size,
        });
    }
    let linkname = match non_empty(pax.get(b"linkpath".as_slice())) {
        Some(l) => l.to_vec(),
        None => entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default(),
    };
    let uname = match non_empty(pax.get(b"uname".as_slice())) {
        Some(u) => u.to_vec(),
        None => hdr.username_bytes().map(<[u8]>::to_vec).unwrap_or_default(),
    };
    let gname = match non_empty(pax.get(b"gname".as_slice())) {
        Some(g) => g.to_vec(),
        None => hdr
            .groupname_bytes()
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
    };
    let (secs, nanos) = match pax
        .get(b"mtime".as_slice())
        .and_then(|v| crate::time::parse_pax_time(v))
    {
        Some(t) => t,
        None => (numeric(raw, 136..148, "mtime")?, 0),
    };
    let (devmajor, devminor) = (
        numeric(raw, 329..337, "devmajor")?,
        numeric(raw, 337..345, "devminor")?,
    );
    // PAX uid/gid override the header fields.
    let pax_id = |key: &[u8]| {
        pax.get(key)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let uid = match pax_id(b"uid") {
        Some(v) => v,
        None => numeric(raw, 108..116, "uid")?,
    };
    let gid = match pax_id(b"gid") {
        Some(v) => v,
        None => numeric(raw, 116..124, "gid")?,
    };
    Ok(FileMetadata {
        name,
        kind,
        uncompressed_offset: UncompressedOffset(entry.raw_file_position()),
        uncompressed_size: size,
        linkname,
        mode: numeric(raw, 100..108, "mode")?,
        uid: uid as u32,
        gid: gid as u32,
        uname,
        gname,
        mod_time: crate::time::format_rfc3339(secs, nanos),
        devmajor,
        devminor,
        xattrs: pax,
    })
}

/// Parses a numeric header field the way Go's `archive/tar` does (whose output the format
/// records): octal text with surrounding spaces/NULs trimmed (empty means 0), or GNU base-256
/// when the high bit of the first byte is set.
fn numeric(raw: &[u8; 512], field: std::ops::Range<usize>, what: &'static str) -> Result<i64> {
    let b = &raw[field];
    let bad = || {
        Error::Tar(io::Error::other(format!(
            "invalid numeric {what} field in tar header"
        )))
    };
    if b.first().is_some_and(|c| c & 0x80 != 0) {
        let inv: u8 = if b[0] & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, c) in b.iter().enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 > 0 {
                return Err(bad());
            }
            x = (x << 8) | u64::from(c);
        }
        if x >> 63 > 0 {
            return Err(bad());
        }
        return Ok(if inv == 0xff { !(x as i64) } else { x as i64 });
    }
    let t = trim(b);
    if t.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(t).map_err(|_| bad())?;
    i64::from_str_radix(s, 8).map_err(|_| bad())
}

fn trim(b: &[u8]) -> &[u8] {
    let keep = |c: &u8| *c != b' ' && *c != 0;
    let start = b.iter().position(keep).unwrap_or(b.len());
    let end = b.iter().rposition(keep).map_or(start, |e| e + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr_with(field: std::ops::Range<usize>, bytes: &[u8]) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[field.start..field.start + bytes.len()].copy_from_slice(bytes);
        h
    }

    #[test]
    fn numeric_fields_parse_like_go() {
        assert_eq!(
            numeric(&hdr_with(108..116, b""), 108..116, "uid").unwrap(),
            0
        );
        assert_eq!(
            numeric(&hdr_with(108..116, b"0001750\0"), 108..116, "uid").unwrap(),
            1000
        );
        assert_eq!(
            numeric(&hdr_with(108..116, b" 17 "), 108..116, "uid").unwrap(),
            15
        );
        let mut b256 = [0u8; 8];
        b256[0] = 0x80;
        b256[7] = 0x2a;
        assert_eq!(
            numeric(&hdr_with(108..116, &b256), 108..116, "uid").unwrap(),
            42
        );
        let neg = [0xff; 8];
        assert_eq!(
            numeric(&hdr_with(136..144, &neg), 136..144, "mtime").unwrap(),
            -1
        );
        assert!(numeric(&hdr_with(108..116, b"9x"), 108..116, "uid").is_err());
    }
}
