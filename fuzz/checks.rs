//! The checks of the fuzz targets, as plain functions over bytes.
//!
//! Shared by the cargo-fuzz targets in `fuzz_targets/` (via `#[path]`) and by
//! `soci-ztoc/tests/fuzz_corpus.rs`, which runs them over the checked-in corpus and random
//! inputs on the stable toolchain. Each function panics when a property is violated; any
//! `Err` from soci-ztoc is fine.

use std::io::Write;

use soci_ztoc::{GzipCheckpoints, UncompressedOffset, Ztoc, ZtocBuilder};

/// zTOC decode never panics; whatever decodes re-encodes to bytes that decode to the same
/// value, and encoding is stable.
pub fn ztoc_decode(data: &[u8]) {
    let Ok(z) = Ztoc::from_bytes(data) else {
        return;
    };
    let bytes = z.to_bytes();
    let again = Ztoc::from_bytes(&bytes).expect("re-encoded zTOC must decode");
    assert_eq!(again, z, "decode(encode(z)) != z");
    assert_eq!(again.to_bytes(), bytes, "encoding is not stable");
    let _ = z.layout();
    let _ = z.zinfo();
}

/// Checkpoint blob decode never panics; a decoded blob re-encodes to the same bytes (v1 stays
/// v1).
pub fn checkpoints_decode(data: &[u8]) {
    let Ok(g) = GzipCheckpoints::from_bytes(data) else {
        return;
    };
    assert_eq!(g.to_bytes(), data, "checkpoint blob does not round trip");
    let again = GzipCheckpoints::from_bytes(&g.to_bytes()).expect("re-encoded blob must decode");
    assert_eq!(again, g);
}

/// Building a zTOC from arbitrary bytes, raw and wrapped in gzip, never panics; a zTOC that
/// builds is consistent and its files extract.
pub fn tar_walk(data: &[u8]) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip to memory");
    let gz = gz.finish().expect("gzip to memory");
    for (layer, span) in [(data, 512u64), (&gz[..], 0), (&gz[..], 4096)] {
        let Ok(z) = ZtocBuilder::new().span_size(span).build(layer) else {
            continue;
        };
        let zinfo = z.zinfo().expect("a built zTOC passes its own checks");
        assert!(z.uncompressed_archive_size <= data.len() as u64);
        let bytes = z.to_bytes();
        assert_eq!(Ztoc::from_bytes(&bytes).expect("decodes"), z);
        if z.layout().is_err() {
            continue;
        }
        for m in &z.toc {
            if m.kind == soci_ztoc::EntryType::Regular {
                let got = zinfo
                    .read_range(layer, m.uncompressed_offset, m.uncompressed_size)
                    .expect("a built zTOC extracts its files");
                // Raw or gzip'd, the uncompressed stream is `data`.
                let o = m.uncompressed_offset.0 as usize;
                assert_eq!(got, &data[o..o + got.len()]);
            }
        }
    }
}

/// An arbitrary zTOC + blob pair: decode, zinfo and reads of arbitrary ranges never panic.
/// Input: `u32 LE zTOC length`, the zTOC, then the blob; the last 16 bytes (if any) seed the
/// ranges.
pub fn extract(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let n = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (ztoc, blob) = rest.split_at(n);
    let Ok(z) = Ztoc::from_bytes(ztoc) else {
        return;
    };
    let _ = z.layout();
    let Ok(zinfo) = z.zinfo() else {
        return;
    };
    // Callers (CLI, snapshotter) check the blob size against the zTOC before reading; without
    // that a zTOC can make read_range allocate its claimed compressed size.
    if z.compressed_archive_size != blob.len() as u64 {
        return;
    }
    let seed = blob.len().saturating_sub(16);
    let mut x = u64::from_le_bytes(
        blob[seed..]
            .get(..8)
            .and_then(|s| s.try_into().ok())
            .unwrap_or([7; 8]),
    );
    let tar = z.uncompressed_archive_size.max(1);
    for _ in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = x % (tar + 16);
        let len = (x >> 40) % 70_000;
        if let Ok(v) = zinfo.read_range(&blob, UncompressedOffset(off), len) {
            assert_eq!(v.len() as u64, len);
        }
    }
    for i in 0..zinfo.span_count().min(64) {
        let id = soci_ztoc::SpanId(i as u32);
        if let Some(s) = zinfo.span(id) {
            if let Some(b) = blob.get(s.compressed.start as usize..s.compressed.end as usize) {
                if s.uncompressed.end - s.uncompressed.start < 1 << 24 {
                    let _ = zinfo.decompress_span(id, b);
                }
            }
        }
    }
    for m in z.toc.iter().take(64) {
        if m.uncompressed_size < 1 << 24 {
            let _ = z.extract_file(&zinfo, &blob, &m.name);
        }
    }
}
