//! Helpers shared by the soci-ztoc benchmarks: a realistic layer generator and a [`ReadAt`]
//! that counts what it reads.
//!
//! The layer mixes text and binaries the way a distro layer does: the files of
//! `/usr/lib/python3*`, `/usr/share/perl*` and `/usr/lib/x86_64-linux-gnu`, repeated under
//! `copyN/` prefixes until the tar reaches the wanted size. `make-layer.py` in this directory
//! writes the same kind of layer for the shell benchmark (`scripts/bench-ztoc.sh`).

use std::cell::Cell;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use soci_ztoc::ReadAt;

/// The directories the layer is made of.
pub fn source_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for (dir, prefix) in [("/usr/lib", "python3"), ("/usr/share", "perl")] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect();
            v.sort();
            roots.extend(v);
        }
    }
    roots.push(PathBuf::from("/usr/lib/x86_64-linux-gnu"));
    roots
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// An uncompressed tar of at least `size` bytes of realistic content (regular files only,
/// deterministic order and metadata). Falls back to synthetic text + random bytes when the
/// source directories are missing.
pub fn make_tar(size: u64) -> Vec<u8> {
    let mut files = Vec::new();
    for r in source_roots() {
        walk(&r, &mut files);
    }
    let mut b = tar::Builder::new(Vec::with_capacity(size as usize + (1 << 20)));
    let mut copy = 0;
    let mut synthetic = 0u64;
    while (b.get_ref().len() as u64) < size {
        let mut added = false;
        for f in &files {
            if b.get_ref().len() as u64 >= size {
                break;
            }
            let Ok(data) = std::fs::read(f) else {
                continue;
            };
            append(&mut b, &format!("copy{copy}{}", f.display()), &data);
            added = true;
        }
        if !added {
            // No readable source files: synthetic half-text, half-random content.
            synthetic += 1;
            let data = synthetic_data(1 << 20, synthetic);
            append(&mut b, &format!("synthetic/{synthetic}"), &data);
        }
        copy += 1;
    }
    b.into_inner().expect("finishing an in-memory tar")
}

fn append(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, name, data)
        .expect("appending to an in-memory tar");
}

fn synthetic_data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if out.len() < len / 2 {
            out.extend(x.to_le_bytes().iter().map(|b| b'a' + b % 26));
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// gzip at `level` (the benchmarks use 6, gzip's and Docker's default).
pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 2),
        flate2::Compression::new(level),
    );
    e.write_all(data).expect("gzip to memory");
    e.finish().expect("gzip to memory")
}

/// Single-threaded inflate of a (multi-member) gzip stream to a sink, through flate2 with the
/// zlib-rs backend: the baseline the zTOC build is compared with. Returns the output size.
pub fn inflate_only<R: io::Read>(gz: R) -> io::Result<u64> {
    use io::Read as _;
    let mut d = flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 16, gz));
    // Large reads: io::copy's 8 KiB chunks make flate2 ~25% slower, a weaker baseline.
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        match d.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A [`ReadAt`] that counts the calls and bytes it serves.
#[derive(Debug)]
pub struct CountingReadAt<R> {
    inner: R,
    bytes: Cell<u64>,
    calls: Cell<u64>,
}

impl<R: ReadAt> CountingReadAt<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            bytes: Cell::new(0),
            calls: Cell::new(0),
        }
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    /// `read_exact_at` calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.get()
    }
}

impl<R: ReadAt> ReadAt for CountingReadAt<R> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.bytes.set(self.bytes.get() + buf.len() as u64);
        self.calls.set(self.calls.get() + 1);
        self.inner.read_exact_at(buf, offset)
    }
}
