//! Shared helpers of the soci-ztoc integration tests: a hand-written tar writer that records
//! what it wrote, gzip helpers, and an independent checker of everything a zTOC claims.
//!
//! The checker never trusts soci-ztoc for the facts it verifies: the checkpoint blob is parsed
//! by hand from the §2.1 layout, span ranges are computed from §2.3, the decompressed stream
//! comes from flate2, and gzip header lengths from RFC 1952.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::Range;

use sha2::{Digest, Sha256};
use soci_ztoc::{
    Compression, EntryType, FileMetadata, ReadAt, UncompressedOffset, Ztoc, ZtocBuilder,
};

pub const BLOCK: usize = 512;
pub const WINDOW: usize = 32768;
pub const RECORD: usize = 8 + 8 + 1 + WINDOW;

// ---------------------------------------------------------------------------------------------
// A tar writer that produces exactly the bytes we ask for and remembers the TOC we expect.

/// Fields of one ustar header. Numbers are written in octal.
#[derive(Debug, Clone)]
pub struct Hdr {
    pub name: Vec<u8>,
    pub mode: u64,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    pub flag: u8,
    pub linkname: Vec<u8>,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub devmajor: u64,
    pub devminor: u64,
    pub prefix: Vec<u8>,
    /// `ustar\0` + `00` (POSIX) or `ustar  \0` (old GNU).
    pub gnu_magic: bool,
}

impl Hdr {
    pub fn new(name: impl AsRef<[u8]>, flag: u8) -> Self {
        Self {
            name: name.as_ref().to_vec(),
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            size: 0,
            mtime: 1_677_661_200,
            flag,
            linkname: Vec::new(),
            uname: b"user".to_vec(),
            gname: b"group".to_vec(),
            devmajor: 0,
            devminor: 0,
            prefix: Vec::new(),
            gnu_magic: false,
        }
    }

    pub fn block(&self) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        put(&mut b[0..100], &self.name);
        octal(&mut b[100..108], self.mode);
        octal(&mut b[108..116], self.uid);
        octal(&mut b[116..124], self.gid);
        octal(&mut b[124..136], self.size);
        octal(&mut b[136..148], self.mtime);
        b[156] = self.flag;
        put(&mut b[157..257], &self.linkname);
        if self.gnu_magic {
            b[257..265].copy_from_slice(b"ustar  \0");
        } else {
            b[257..263].copy_from_slice(b"ustar\0");
            b[263..265].copy_from_slice(b"00");
        }
        put(&mut b[265..297], &self.uname);
        put(&mut b[297..329], &self.gname);
        octal(&mut b[329..337], self.devmajor);
        octal(&mut b[337..345], self.devminor);
        put(&mut b[345..500], &self.prefix);
        set_checksum(&mut b);
        b
    }
}

/// (Re)computes the header checksum after the block was edited.
pub fn set_checksum(b: &mut [u8; BLOCK]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
}

fn put(dst: &mut [u8], src: &[u8]) {
    assert!(src.len() <= dst.len(), "field too long: {}", src.len());
    dst[..src.len()].copy_from_slice(src);
}

pub fn octal(dst: &mut [u8], v: u64) {
    let s = format!("{:0width$o}\0", v, width = dst.len() - 1);
    assert_eq!(s.len(), dst.len(), "value {v} does not fit");
    dst.copy_from_slice(s.as_bytes());
}

/// One PAX record, `"<len> key=value\n"`, where len counts itself.
pub fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len += 1;
    }
    let mut r = len.to_string().into_bytes();
    r.push(b' ');
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

pub fn rfc3339(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A tar under construction plus the TOC a correct producer must derive from it.
#[derive(Debug, Default)]
pub struct RawTar {
    pub buf: Vec<u8>,
    pub expected: Vec<FileMetadata>,
    /// Offset of the first header block of each entry, in `expected` order.
    pub header_offsets: Vec<u64>,
    /// Offset just after the end-of-archive marker (after `finish`).
    pub tar_size: u64,
    pending_pax: BTreeMap<Vec<u8>, Vec<u8>>,
    pending_long_name: Option<Vec<u8>>,
    pending_long_link: Option<Vec<u8>>,
    entry_start: Option<u64>,
}

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    fn mark_start(&mut self) {
        if self.entry_start.is_none() {
            self.entry_start = Some(self.buf.len() as u64);
        }
    }

    fn data(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    /// A PAX extended header (`x`) for the next entry.
    pub fn pax(&mut self, records: &[(&[u8], &[u8])]) {
        self.mark_start();
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend(pax_record(k, v));
            self.pending_pax.insert(k.to_vec(), v.to_vec());
        }
        let mut h = Hdr::new(b"./PaxHeaders/x", b'x');
        h.size = data.len() as u64;
        self.buf.extend_from_slice(&h.block());
        self.data(&data);
    }

    /// A global PAX header (`g`), which producers must reject.
    pub fn global_pax(&mut self, records: &[(&[u8], &[u8])]) {
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend(pax_record(k, v));
        }
        let mut h = Hdr::new(b"pax_global_header", b'g');
        h.size = data.len() as u64;
        self.buf.extend_from_slice(&h.block());
        self.data(&data);
    }

    /// A GNU long name (`L`) or long link (`K`) pseudo-entry.
    pub fn gnu_long(&mut self, flag: u8, value: &[u8]) {
        self.mark_start();
        let mut data = value.to_vec();
        data.push(0);
        let mut h = Hdr::new(b"././@LongLink", flag);
        h.gnu_magic = true;
        h.mode = 0;
        h.uid = 0;
        h.gid = 0;
        h.mtime = 0;
        h.uname = b"root".to_vec();
        h.gname = b"root".to_vec();
        h.size = data.len() as u64;
        self.buf.extend_from_slice(&h.block());
        self.data(&data);
        if flag == b'L' {
            self.pending_long_name = Some(value.to_vec());
        } else {
            self.pending_long_link = Some(value.to_vec());
        }
    }

    /// The real header of an entry plus its content; records the expected TOC entry.
    /// `content` is written physically only for regular files. Returns the content offset.
    pub fn entry(&mut self, h: &Hdr, content: &[u8]) -> u64 {
        self.mark_start();
        let mut h = h.clone();
        if h.flag == b'0' || h.flag == 0 {
            h.size = content.len() as u64;
        }
        self.buf.extend_from_slice(&h.block());
        let offset = self.buf.len() as u64;
        if h.flag == b'0' || h.flag == 0 {
            self.data(content);
        }
        let pax = std::mem::take(&mut self.pending_pax);
        let get = |k: &[u8]| pax.get(k).filter(|v| !v.is_empty()).cloned();
        let mut name = if h.prefix.is_empty() {
            h.name.clone()
        } else {
            let mut n = h.prefix.clone();
            n.push(b'/');
            n.extend_from_slice(&h.name);
            n
        };
        if let Some(l) = self.pending_long_name.take() {
            name = l;
        }
        if let Some(p) = get(b"path") {
            name = p;
        }
        let mut linkname = h.linkname.clone();
        if let Some(l) = self.pending_long_link.take() {
            linkname = l;
        }
        if let Some(l) = get(b"linkpath") {
            linkname = l;
        }
        let kind = match h.flag {
            b'0' => EntryType::Regular,
            0 if name.ends_with(b"/") => EntryType::Dir,
            0 => EntryType::Regular,
            b'1' => EntryType::Hardlink,
            b'2' => EntryType::Symlink,
            b'3' => EntryType::Char,
            b'4' => EntryType::Block,
            b'5' => EntryType::Dir,
            b'6' => EntryType::Fifo,
            other => panic!("expected() cannot describe type {other}"),
        };
        let mod_time = match get(b"mtime") {
            Some(m) => pax_mtime_rfc3339(&m),
            None => rfc3339(h.mtime),
        };
        self.expected.push(FileMetadata {
            name,
            kind,
            uncompressed_offset: UncompressedOffset(offset),
            uncompressed_size: match get(b"size") {
                Some(s) => String::from_utf8(s).unwrap().parse().unwrap(),
                None => h.size,
            },
            linkname,
            mode: h.mode as i64,
            uid: get(b"uid").map_or(h.uid as u32, |v| {
                String::from_utf8(v).unwrap().parse().unwrap()
            }),
            gid: get(b"gid").map_or(h.gid as u32, |v| {
                String::from_utf8(v).unwrap().parse().unwrap()
            }),
            uname: get(b"uname").unwrap_or(h.uname.clone()),
            gname: get(b"gname").unwrap_or(h.gname.clone()),
            mod_time,
            devmajor: h.devmajor as i64,
            devminor: h.devminor as i64,
            xattrs: pax,
        });
        self.header_offsets.push(self.entry_start.take().unwrap());
        offset
    }

    /// A regular file with default fields.
    pub fn file(&mut self, name: impl AsRef<[u8]>, content: &[u8]) -> u64 {
        self.entry(&Hdr::new(name, b'0'), content)
    }

    /// Writes `zero_blocks` zero blocks (the end-of-archive marker is 2) plus `padding` more
    /// zero bytes, and records the size a Go-style tar reader consumes (§3.2).
    pub fn finish(&mut self, zero_blocks: usize, padding: usize) -> Vec<u8> {
        let end = self.buf.len();
        self.buf
            .extend(std::iter::repeat_n(0u8, zero_blocks * BLOCK + padding));
        self.tar_size = (end + zero_blocks.min(2) * BLOCK) as u64;
        self.buf.clone()
    }
}

/// RFC 3339 of a PAX `mtime` value written by the tests (`secs[.frac]`, non-negative).
pub fn pax_mtime_rfc3339(v: &[u8]) -> String {
    let s = std::str::from_utf8(v).unwrap();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let base = rfc3339(secs.parse().unwrap());
    let frac: String = frac.chars().take(9).collect();
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        base
    } else {
        format!("{}.{}Z", base.trim_end_matches('Z'), frac)
    }
}

// ---------------------------------------------------------------------------------------------
// Compression helpers.

pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Several gzip members, the data split at `cuts` (offsets into `data`).
pub fn gzip_members(data: &[u8], cuts: &[usize], level: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev = 0;
    for &c in cuts.iter().chain(std::iter::once(&data.len())) {
        let c = c.clamp(prev, data.len());
        out.extend(gzip(&data[prev..c], level));
        prev = c;
    }
    out
}

/// Full decompression with flate2 (multi-member aware): the reference stream.
pub fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(gz)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Length of the gzip header at the start of `gz` (RFC 1952 §2.3).
pub fn gzip_header_len(gz: &[u8]) -> usize {
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
    let flg = gz[3];
    let mut p = 10;
    if flg & 4 != 0 {
        let xlen = u16::from_le_bytes([gz[p], gz[p + 1]]) as usize;
        p += 2 + xlen;
    }
    for bit in [8u8, 16] {
        if flg & bit != 0 {
            while gz[p] != 0 {
                p += 1;
            }
            p += 1;
        }
    }
    if flg & 2 != 0 {
        p += 2;
    }
    p
}

/// A gzip member whose header carries FHCRC (and FNAME), built by hand. `good_crc = false`
/// writes a wrong header CRC16.
pub fn gzip_with_fhcrc(data: &[u8], good_crc: bool) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 2 | 8, 0x78, 0x56, 0x34, 0x12, 0, 255];
    out.extend_from_slice(b"layer.tar\0");
    let mut crc = flate2::Crc::new();
    crc.update(&out);
    let mut crc16 = (crc.sum() & 0xffff) as u16;
    if !good_crc {
        crc16 ^= 0x5a5a;
    }
    out.extend_from_slice(&crc16.to_le_bytes());
    let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
    d.write_all(data).unwrap();
    out.extend(d.finish().unwrap());
    let mut c = flate2::Crc::new();
    c.update(data);
    out.extend_from_slice(&c.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

// ---------------------------------------------------------------------------------------------
// The §2.1 checkpoint blob, parsed by hand.

#[derive(Debug, Clone)]
pub struct RawCheckpoint {
    pub input: u64,
    pub output: u64,
    pub bits: u8,
    pub window: Vec<u8>,
}

/// Parses a v2 blob: `count: i32 LE`, `span_size: i64 LE`, then count × 32785-byte records.
pub fn parse_blob(blob: &[u8]) -> (u64, Vec<RawCheckpoint>) {
    let count = i32::from_le_bytes(blob[0..4].try_into().unwrap());
    let span = i64::from_le_bytes(blob[4..12].try_into().unwrap());
    assert!(count >= 0 && span >= 0);
    assert_eq!(blob.len(), 12 + count as usize * RECORD, "not a v2 blob");
    let cps = blob[12..]
        .chunks_exact(RECORD)
        .map(|r| RawCheckpoint {
            input: i64::from_le_bytes(r[0..8].try_into().unwrap()) as u64,
            output: i64::from_le_bytes(r[8..16].try_into().unwrap()) as u64,
            bits: r[16],
            window: r[17..].to_vec(),
        })
        .collect();
    (span as u64, cps)
}

/// §2.3 span ranges (compressed, uncompressed) from a checkpoint list.
pub fn span_ranges(
    cps: &[RawCheckpoint],
    blob_size: u64,
    tar_size: u64,
) -> Vec<(Range<u64>, Range<u64>)> {
    (0..cps.len())
        .map(|i| {
            let c = &cps[i];
            let start = if c.bits != 0 { c.input - 1 } else { c.input };
            let (cend, uend) = match cps.get(i + 1) {
                Some(n) => (n.input, n.output),
                // §2.3 says `tar_size`; when the last checkpoint sits in the padding after
                // the archive that range would be inverted, so it is empty instead.
                None => (blob_size, tar_size.max(c.output)),
            };
            (start..cend, c.output..uend)
        })
        .collect()
}

/// The 32 KiB before `out` in `stream`, zero-padded at the front.
pub fn window_before(stream: &[u8], out: u64) -> Vec<u8> {
    let out = out as usize;
    let mut w = vec![0u8; WINDOW];
    let have = out.min(WINDOW);
    w[WINDOW - have..].copy_from_slice(&stream[out - have..out]);
    w
}

// ---------------------------------------------------------------------------------------------
// A ReadAt that records what was read.

#[derive(Debug)]
pub struct CountingReadAt<'a> {
    pub data: &'a [u8],
    pub reads: RefCell<Vec<Range<u64>>>,
}

impl<'a> CountingReadAt<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            reads: RefCell::new(Vec::new()),
        }
    }

    pub fn bytes_read(&self) -> u64 {
        self.reads.borrow().iter().map(|r| r.end - r.start).sum()
    }
}

impl ReadAt for CountingReadAt<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.reads
            .borrow_mut()
            .push(offset..offset + buf.len() as u64);
        self.data.read_exact_at(buf, offset)
    }
}

// ---------------------------------------------------------------------------------------------
// The checker.

/// What a fixture promises about its layer.
#[derive(Debug)]
pub struct Fixture<'a> {
    pub layer: &'a [u8],
    /// Uncompressed tar (the full decompressed stream, trailing padding included).
    pub tar: &'a [u8],
    pub expected: &'a [FileMetadata],
    pub header_offsets: &'a [u64],
    pub tar_size: u64,
}

impl<'a> Fixture<'a> {
    pub fn from_raw(layer: &'a [u8], raw: &'a RawTar, tar: &'a [u8]) -> Self {
        Self {
            layer,
            tar,
            expected: &raw.expected,
            header_offsets: &raw.header_offsets,
            tar_size: raw.tar_size,
        }
    }
}

pub fn build(layer: &[u8], span: u64) -> soci_ztoc::Result<Ztoc> {
    ZtocBuilder::new().span_size(span).build(layer)
}

/// Builds the zTOC of a fixture with span size `span` and checks every claim it makes.
pub fn check(f: &Fixture<'_>, span: u64) -> Ztoc {
    let ztoc = build(f.layer, span).unwrap();
    check_ztoc(f, &ztoc, span);
    // Determinism: a second build gives the same bytes.
    let again = build(f.layer, span).unwrap();
    assert_eq!(
        ztoc.to_bytes(),
        again.to_bytes(),
        "build is not deterministic"
    );
    ztoc
}

pub fn check_ztoc(f: &Fixture<'_>, ztoc: &Ztoc, span: u64) {
    // TOC and sizes.
    assert_eq!(ztoc.version, "0.9");
    assert_eq!(ztoc.build_tool_identifier, "AWS SOCI CLI v0.2");
    assert_eq!(ztoc.toc.len(), f.expected.len());
    for (got, want) in ztoc.toc.iter().zip(f.expected) {
        assert_eq!(got, want, "toc entry {:?}", want.name_lossy());
    }
    assert_eq!(ztoc.compressed_archive_size, f.layer.len() as u64);
    assert_eq!(ztoc.uncompressed_archive_size, f.tar_size, "§3.2 tar size");

    // Encoding round trip and stability.
    let bytes = ztoc.to_bytes();
    let back = Ztoc::from_bytes(&bytes).unwrap();
    assert_eq!(&back, ztoc);
    assert_eq!(back.to_bytes(), bytes);

    // §1.4 header reconstruction.
    let layout = ztoc.layout().unwrap();
    let mut by_offset: Vec<(u64, u64)> = f
        .expected
        .iter()
        .zip(f.header_offsets)
        .map(|(m, h)| (m.uncompressed_offset.0, *h))
        .collect();
    by_offset.sort();
    assert_eq!(layout.len(), by_offset.len());
    for (l, (off, hdr)) in layout.iter().zip(&by_offset) {
        assert_eq!(ztoc.toc[l.index].uncompressed_offset.0, *off);
        assert_eq!(l.header_offset, *hdr, "header offset of entry at {off}");
        assert_eq!(l.header_size, off - hdr);
    }

    // Extraction of every regular file.
    let zinfo = ztoc.zinfo().unwrap();
    for m in &ztoc.toc {
        if m.kind != EntryType::Regular {
            continue;
        }
        let off = m.uncompressed_offset.0 as usize;
        let want = &f.tar[off..off + m.uncompressed_size as usize];
        let got = zinfo
            .read_range(f.layer, m.uncompressed_offset, m.uncompressed_size)
            .unwrap();
        assert!(got == want, "content of {:?}", m.name_lossy());
    }

    // Spans.
    let ci = &ztoc.compression;
    match ci.algorithm {
        Compression::Gzip => check_gzip_spans(f, ztoc, span),
        Compression::Uncompressed => check_tar_spans(f, ztoc, span),
    }
}

fn check_gzip_spans(f: &Fixture<'_>, ztoc: &Ztoc, span: u64) {
    let ci = &ztoc.compression;
    let (span_size, cps) = parse_blob(&ci.checkpoints);
    assert_eq!(span_size, span);
    assert!(!cps.is_empty());
    assert_eq!(ci.max_span_id.0 as usize, cps.len() - 1);
    assert_eq!(ci.span_digests.len(), cps.len());

    // Checkpoint 0 sits right after the first gzip header.
    assert_eq!(cps[0].input, gzip_header_len(f.layer) as u64);
    assert_eq!(cps[0].output, 0);
    assert_eq!(cps[0].bits, 0);
    assert!(cps[0].window.iter().all(|b| *b == 0));

    // §2.2 placement: strictly more than `span` bytes of output between checkpoints.
    for w in cps.windows(2) {
        assert!(w[1].output - w[0].output > span, "checkpoints too close");
        assert!(w[1].input > w[0].input);
        assert!(w[1].bits <= 7);
    }
    for c in &cps {
        assert!(
            c.window == window_before(f.tar, c.output),
            "window of checkpoint at out={}",
            c.output
        );
    }

    // §2.4 digests of the §2.3 ranges.
    let ranges = span_ranges(&cps, f.layer.len() as u64, ztoc.uncompressed_archive_size);
    for (i, (c, _)) in ranges.iter().enumerate() {
        let bytes = &f.layer[c.start as usize..c.end as usize];
        assert_eq!(ci.span_digests[i], sha256(bytes), "digest of span {i}");
    }
    // soci-ztoc's own geometry agrees.
    let zinfo = ztoc.zinfo().unwrap();
    for (i, (c, u)) in ranges.iter().enumerate() {
        let s = zinfo.span(soci_ztoc::SpanId(i as u32)).unwrap();
        assert_eq!(&s.compressed, c);
        assert_eq!(&s.uncompressed, u);
        // And each span decompresses, on its own, to its slice of the stream.
        let got = zinfo
            .decompress_span(s.id, &f.layer[c.start as usize..c.end as usize])
            .unwrap();
        assert!(got == f.tar[u.start as usize..u.end as usize], "span {i}");
    }
    assert_eq!(zinfo.header_range(), 0..cps[0].input);
    zinfo
        .verify_header(&f.layer[..cps[0].input as usize])
        .unwrap();
}

fn check_tar_spans(f: &Fixture<'_>, ztoc: &Ztoc, span: u64) {
    let ci = &ztoc.compression;
    let size = f.layer.len() as u64;
    let (got_span, got_size) = decode_tar_zinfo(&ci.checkpoints);
    assert_eq!((got_span, got_size), (span, size));
    let n = size.div_ceil(span).max(1);
    assert_eq!(u64::from(ci.max_span_id.0) + 1, n);
    assert_eq!(ci.span_digests.len() as u64, n);
    for i in 0..n {
        let s = i * span;
        let e = ((i + 1) * span).min(size);
        assert_eq!(
            ci.span_digests[i as usize],
            sha256(&f.layer[s as usize..e as usize])
        );
    }
}

/// The nested `TarZinfo` (§1.6), read by hand: (span_size, size). Checks version == 2.
pub fn decode_tar_zinfo(b: &[u8]) -> (u64, u64) {
    let root = u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
    let vt =
        (root as i64 - i32::from_le_bytes(b[root..root + 4].try_into().unwrap()) as i64) as usize;
    let vt_len = u16::from_le_bytes(b[vt..vt + 2].try_into().unwrap()) as usize;
    let field = |id: usize| -> Option<usize> {
        let s = 4 + 2 * id;
        if s + 2 > vt_len {
            return None;
        }
        let o = u16::from_le_bytes(b[vt + s..vt + s + 2].try_into().unwrap()) as usize;
        (o != 0).then_some(root + o)
    };
    let version = field(0).map_or(0, |p| i32::from_le_bytes(b[p..p + 4].try_into().unwrap()));
    assert_eq!(version, 2);
    let span = field(1).map_or(0, |p| i64::from_le_bytes(b[p..p + 8].try_into().unwrap()));
    let size = field(2).map_or(0, |p| i64::from_le_bytes(b[p..p + 8].try_into().unwrap()));
    (span as u64, size as u64)
}

/// Deterministic pseudo-random bytes (xorshift). `text` gives compressible lowercase text
/// (about 3:1 with gzip, so deflate blocks stay small); otherwise incompressible bytes.
pub fn noise(len: usize, seed: u64, text: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if text {
            for b in x.to_le_bytes() {
                out.push(match b % 32 {
                    0..=25 => b'a' + b % 32,
                    26..=29 => b' ',
                    _ => b'\n',
                });
            }
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}
