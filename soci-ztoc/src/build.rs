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
// The tar walk. The format records what Go's `archive/tar` reports (SPEC §3), so the header
// blocks are parsed here with its semantics rather than with the `tar` crate, which splits PAX
// records at newlines (binary xattr values may contain 0x0a) and differs on GNU long names.

/// Largest PAX or GNU long name/link payload accepted, as in Go's reader.
const MAX_SPECIAL_DATA: u64 = 1 << 20;

fn malformed(what: &'static str) -> Error {
    Error::Tar(io::Error::other(what))
}

/// An error from the layer reader: a typed error raised inside the gzip indexer, or i/o.
fn read_error(e: io::Error) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        return unwrap_indexer_error(e);
    }
    Error::Io {
        context: "reading layer",
        source: e,
    }
}

/// The uncompressed tar stream with its read position.
struct TarStream<'r, R> {
    r: &'r mut R,
    pos: u64,
}

impl<R: Read> TarStream<'_, R> {
    /// Reads up to `buf.len()` bytes; fewer only at the end of the stream.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = read_full(self.r, buf).map_err(read_error)?;
        self.pos += n as u64;
        Ok(n)
    }

    /// The next 512-byte block, or `None` at a clean end of the stream.
    fn block(&mut self) -> Result<Option<[u8; BLOCK as usize]>> {
        let mut b = [0u8; BLOCK as usize];
        match self.fill(&mut b)? {
            0 => Ok(None),
            n if n == b.len() => Ok(Some(b)),
            _ => Err(Error::TruncatedTar { offset: self.pos }),
        }
    }

    /// Discards `n` content bytes, which must all be there.
    fn discard(&mut self, n: u64) -> Result<()> {
        let got = io::copy(&mut (&mut *self.r).take(n), &mut io::sink()).map_err(read_error)?;
        self.pos += got;
        if got < n {
            return Err(Error::TruncatedTar { offset: self.pos });
        }
        Ok(())
    }

    /// Discards the padding after `n` data bytes. False if the stream ends inside it: Go's
    /// reader reports that as the end of the archive, not as an error.
    fn padding(&mut self, n: u64) -> Result<bool> {
        let pad = (BLOCK - n % BLOCK) % BLOCK;
        let mut b = [0u8; BLOCK as usize];
        Ok(self.fill(&mut b[..pad as usize])? == pad as usize)
    }

    /// The data of a PAX or GNU long name/link header.
    fn special(&mut self, size: i64) -> Result<(Vec<u8>, bool)> {
        let size = u64::try_from(size).map_err(|_| malformed("negative size in tar header"))?;
        if size > MAX_SPECIAL_DATA {
            return Err(malformed("PAX or GNU long name header larger than 1 MiB"));
        }
        let mut data = vec![0; size as usize];
        if self.fill(&mut data)? < data.len() {
            return Err(Error::TruncatedTar { offset: self.pos });
        }
        let more = self.padding(size)?;
        Ok((data, more))
    }
}

/// What PAX `x` and GNU `L`/`K` headers say about the next entry.
#[derive(Default)]
struct Pending {
    pax: BTreeMap<Vec<u8>, Vec<u8>>,
    long_name: Vec<u8>,
    long_link: Vec<u8>,
}

/// Walks the tar, returning its TOC and the uncompressed bytes consumed through the
/// end-of-archive marker (SPEC §3.2).
fn walk_tar<R: Read>(r: &mut R) -> Result<(Vec<FileMetadata>, u64)> {
    let mut s = TarStream { r, pos: 0 };
    let mut toc = Vec::new();
    let mut pending = Pending::default();
    while let Some(block) = s.block()? {
        if block.iter().all(|b| *b == 0) {
            // End of archive: a second zero block, or the end of the stream.
            match s.block()? {
                Some(b) if b.iter().any(|x| *x != 0) => {
                    return Err(malformed("zero block followed by a header"))
                }
                _ => break,
            }
        }
        let hdr = Header::parse(&block)?;
        let more = match hdr.flag {
            b'x' => {
                let (data, more) = s.special(hdr.size)?;
                pending.pax = parse_pax(&data)?;
                more
            }
            b'L' | b'K' => {
                let (data, more) = s.special(hdr.size)?;
                let value = c_string(&data).to_vec();
                if hdr.flag == b'L' {
                    pending.long_name = value;
                } else {
                    pending.long_link = value;
                }
                more
            }
            _ => {
                let meta = entry_metadata(&hdr, std::mem::take(&mut pending), s.pos)?;
                let content = if meta.kind == EntryType::Regular {
                    meta.uncompressed_size
                } else {
                    0
                };
                toc.push(meta);
                s.discard(content)?;
                s.padding(content)?
            }
        };
        if !more {
            break;
        }
    }
    Ok((toc, s.pos))
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

/// A NUL-terminated header string: everything before the first NUL.
fn c_string(b: &[u8]) -> &[u8] {
    b.iter().position(|c| *c == 0).map_or(b, |n| &b[..n])
}

/// The fields of one 512-byte header block, decoded per its format.
struct Header {
    flag: u8,
    /// Name with the USTAR prefix applied.
    name: Vec<u8>,
    linkname: Vec<u8>,
    mode: i64,
    uid: i64,
    gid: i64,
    size: i64,
    mtime: i64,
    uname: Vec<u8>,
    gname: Vec<u8>,
    devmajor: i64,
    devminor: i64,
}

impl Header {
    fn parse(raw: &[u8; BLOCK as usize]) -> Result<Self> {
        // The checksum counts the checksum field as spaces; old writers summed signed bytes.
        let stored =
            octal(&raw[148..156]).ok_or_else(|| malformed("invalid tar header checksum"))?;
        let (mut unsigned, mut signed) = (0i64, 0i64);
        for (i, &c) in raw.iter().enumerate() {
            let c = if (148..156).contains(&i) { b' ' } else { c };
            unsigned += i64::from(c);
            signed += i64::from(c as i8);
        }
        if stored != unsigned && stored != signed {
            return Err(malformed("tar header checksum mismatch"));
        }
        // Format by magic, as Go's reader: "ustar\0" (any version) is USTAR/PAX, or star with
        // its trailer; "ustar " + " \0" is GNU; anything else V7, which has no user/group
        // names, device numbers or prefix.
        let magic = &raw[257..263];
        let prefix = if magic == b"ustar\0" {
            if &raw[508..512] == b"tar\0" {
                Some(&raw[345..476])
            } else {
                Some(&raw[345..500])
            }
        } else {
            None
        };
        let v7 = prefix.is_none() && !(magic == b"ustar " && &raw[263..265] == b" \0");
        let mut name = Vec::new();
        if let Some(p) = prefix.map(c_string).filter(|p| !p.is_empty()) {
            name.extend_from_slice(p);
            name.push(b'/');
        }
        name.extend_from_slice(c_string(&raw[0..100]));
        let text = |r: std::ops::Range<usize>| {
            if v7 {
                Vec::new()
            } else {
                c_string(&raw[r]).to_vec()
            }
        };
        let number = |r: std::ops::Range<usize>, what| {
            if v7 {
                Ok(0)
            } else {
                numeric(raw, r, what)
            }
        };
        Ok(Self {
            flag: raw[156],
            name,
            linkname: c_string(&raw[157..257]).to_vec(),
            mode: numeric(raw, 100..108, "mode")?,
            uid: numeric(raw, 108..116, "uid")?,
            gid: numeric(raw, 116..124, "gid")?,
            size: numeric(raw, 124..136, "size")?,
            mtime: numeric(raw, 136..148, "mtime")?,
            uname: text(265..297),
            gname: text(297..329),
            devmajor: number(329..337, "devmajor")?,
            devminor: number(337..345, "devminor")?,
        })
    }
}

/// Parses PAX extended header data: records `"<len> <key>=<value>\n"` where `len` counts the
/// whole record. Values are length-delimited and may hold any byte, newlines included.
fn parse_pax(mut data: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let bad = || malformed("malformed PAX record");
    let mut records = BTreeMap::new();
    while !data.is_empty() {
        let sp = data.iter().position(|c| *c == b' ').ok_or_else(bad)?;
        let digits = &data[..sp];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(bad)?;
        if len <= sp + 1 || len > data.len() {
            return Err(bad());
        }
        let (record, rest) = data.split_at(len);
        let body = record[sp + 1..].strip_suffix(b"\n").ok_or_else(bad)?;
        let eq = body.iter().position(|c| *c == b'=').ok_or_else(bad)?;
        let (key, value) = (&body[..eq], &body[eq + 1..]);
        let textual = matches!(key, b"path" | b"linkpath" | b"uname" | b"gname");
        if key.is_empty() || key.contains(&0) || (textual && value.contains(&0)) {
            return Err(bad());
        }
        // A repeated key: the last record wins.
        records.insert(key.to_vec(), value.to_vec());
        data = rest;
    }
    Ok(records)
}

fn entry_metadata(hdr: &Header, pending: Pending, offset: u64) -> Result<FileMetadata> {
    let pax = pending.pax;
    // PAX records override header fields unless empty; GNU long names/links override both.
    let get = |key: &[u8]| pax.get(key).map(Vec::as_slice).filter(|v| !v.is_empty());
    let pax_int = |key: &[u8], what: &'static str| -> Result<Option<i64>> {
        get(key)
            .map(|v| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.parse::<i64>().ok())
                    .ok_or_else(|| malformed(what))
            })
            .transpose()
    };
    let pax_time = |key: &[u8]| -> Result<Option<(i64, u32)>> {
        get(key)
            .map(|v| crate::time::parse_pax_time(v).ok_or_else(|| malformed("invalid PAX time")))
            .transpose()
    };
    let pick = |long: &[u8], key: &[u8], header: &[u8]| {
        if !long.is_empty() {
            long.to_vec()
        } else {
            get(key).unwrap_or(header).to_vec()
        }
    };
    let name = pick(&pending.long_name, b"path", &hdr.name);
    let linkname = pick(&pending.long_link, b"linkpath", &hdr.linkname);
    let lossy = || String::from_utf8_lossy(&name).into_owned();
    if pax.keys().any(|k| k.starts_with(b"GNU.sparse.")) {
        return Err(Error::SparseEntry { name: lossy() });
    }
    let kind = match hdr.flag {
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
    let uid = pax_int(b"uid", "invalid PAX uid")?.unwrap_or(hdr.uid);
    let gid = pax_int(b"gid", "invalid PAX gid")?.unwrap_or(hdr.gid);
    let size = pax_int(b"size", "invalid PAX size")?.unwrap_or(hdr.size);
    let size = u64::try_from(size).map_err(|_| malformed("negative size in tar header"))?;
    let (secs, nanos) = pax_time(b"mtime")?.unwrap_or((hdr.mtime, 0));
    // Validated like Go's reader, though the zTOC does not record them.
    pax_time(b"atime")?;
    pax_time(b"ctime")?;
    if kind != EntryType::Regular && size != 0 {
        return Err(Error::HeaderOnlyWithSize {
            name: lossy(),
            kind: kind.as_str(),
            size,
        });
    }
    Ok(FileMetadata {
        kind,
        uncompressed_offset: UncompressedOffset(offset),
        uncompressed_size: size,
        linkname,
        mode: hdr.mode,
        uid: uid as u32,
        gid: gid as u32,
        uname: get(b"uname").unwrap_or(&hdr.uname).to_vec(),
        gname: get(b"gname").unwrap_or(&hdr.gname).to_vec(),
        mod_time: crate::time::format_rfc3339(secs, nanos),
        devmajor: hdr.devmajor,
        devminor: hdr.devminor,
        name,
        xattrs: pax,
    })
}

/// Octal text with surrounding spaces/NULs trimmed (empty means 0), as Go reads it.
fn octal(b: &[u8]) -> Option<i64> {
    let t = trim(b);
    if t.is_empty() {
        return Some(0);
    }
    i64::from_str_radix(std::str::from_utf8(t).ok()?, 8).ok()
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
    octal(b).ok_or_else(bad)
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
