//! Byte layouts written out field by field (§1.1, §1.6, §2.1), legacy v1 blobs, big-endian
//! guards, and a golden decode of our zTOC bytes by an independent reader (`flatc`).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use soci_ztoc::{
    Checkpoint, CompressedOffset, Compression, Error, GzipCheckpoints, UncompressedOffset, Ztoc,
};

fn le64(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// A layer with several checkpoints and a 10-byte gzip header.
fn sample() -> (RawTar, Vec<u8>, Vec<u8>) {
    let mut raw = RawTar::new();
    raw.file("etc/hostname", b"soci\n");
    raw.file("usr/lib/big", &noise(200_000, 77, true));
    raw.file("usr/lib/bin", &noise(50_000, 78, false));
    let tar = raw.finish(2, 0);
    let layer = gzip(&tar, 6);
    (raw, tar, layer)
}

#[test]
fn checkpoint_blob_layout_field_by_field() {
    let (_, tar, layer) = sample();
    let span = 0x1_0000u64;
    let z = build(&layer, span).unwrap();
    let blob = &z.compression.checkpoints;
    let n = (z.compression.max_span_id.0 + 1) as usize;
    assert!(n >= 3);

    // Header: count (i32 LE), span_size (i64 LE).
    assert_eq!(blob.len(), 12 + n * 32785);
    assert_eq!(&blob[0..4], &(n as i32).to_le_bytes());
    // Big-endian guard: 65536 as i64 LE is 00 00 01 00 00 00 00 00.
    assert_eq!(&blob[4..12], &[0, 0, 1, 0, 0, 0, 0, 0]);
    assert_eq!(blob[0], n as u8);
    assert_eq!(&blob[1..4], &[0, 0, 0]);

    // Record 0: in = 10 (minimal header), out = 0, bits = 0, window all zeros.
    let r0 = &blob[12..12 + 32785];
    assert_eq!(&r0[0..8], &[10, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&r0[8..16], &[0; 8]);
    assert_eq!(r0[16], 0);
    assert!(r0[17..].iter().all(|b| *b == 0));

    // Later records: in/out little-endian, then bits, then the raw window.
    let stream = gunzip(&layer);
    assert_eq!(stream, tar);
    let mut prev_out = 0;
    for i in 1..n {
        let r = &blob[12 + i * 32785..12 + (i + 1) * 32785];
        let input = u64::from_le_bytes(r[0..8].try_into().unwrap());
        let out = u64::from_le_bytes(r[8..16].try_into().unwrap());
        assert!(input < layer.len() as u64 && out > prev_out + span);
        // The high bytes of these small offsets are zero only when read little-endian.
        assert_eq!(&r[4..8], &[0, 0, 0, 0]);
        assert_eq!(&r[12..16], &[0, 0, 0, 0]);
        assert_eq!(r[0], input as u8);
        assert!(r[16] <= 7);
        assert_eq!(&r[17..], &window_before(&stream, out)[..]);
        prev_out = out;
    }
}

/// A blob written by hand, with values whose every byte differs.
fn hand_blob(records: &[(u64, u64, u8, u8)], count: i32, span: u64) -> Vec<u8> {
    let mut b = count.to_le_bytes().to_vec();
    b.extend_from_slice(&le64(span));
    for &(input, out, bits, fill) in records {
        b.extend_from_slice(&le64(input));
        b.extend_from_slice(&le64(out));
        b.push(bits);
        let mut w = vec![fill; 32768];
        w[0] = 0xa5;
        w[32767] = 0x5a;
        b.extend_from_slice(&w);
    }
    b
}

#[test]
fn v2_blob_decodes_little_endian() {
    let blob = hand_blob(
        &[(10, 0, 0, 0), (0x0102_0304_0506, 0x0a0b_0c0d_0e0f, 5, 0x11)],
        2,
        0x0001_0203_0405_0607,
    );
    let g = GzipCheckpoints::from_bytes(&blob).unwrap();
    assert!(!g.legacy_v1);
    assert_eq!(g.span_size, 0x0001_0203_0405_0607);
    assert_eq!(g.checkpoints.len(), 2);
    let c = &g.checkpoints[1];
    assert_eq!(c.input, CompressedOffset(0x0102_0304_0506));
    assert_eq!(c.output, UncompressedOffset(0x0a0b_0c0d_0e0f));
    assert_eq!(c.bits, 5);
    assert_eq!(
        (c.window[0], c.window[1], c.window[32767]),
        (0xa5, 0x11, 0x5a)
    );
    assert_eq!(g.to_bytes(), blob);
}

#[test]
fn legacy_v1_blob_decodes_and_reencodes_as_v1() {
    // count = 3 but only 2 records: checkpoint 0 is implied as {10, 0, 0, zeros}.
    let blob = hand_blob(&[(500, 70_000, 3, 7), (900, 140_000, 0, 9)], 3, 65_536);
    let g = GzipCheckpoints::from_bytes(&blob).unwrap();
    assert!(g.legacy_v1);
    assert_eq!(g.checkpoints.len(), 3);
    let c0 = &g.checkpoints[0];
    assert_eq!((c0.input.0, c0.output.0, c0.bits), (10, 0, 0));
    assert!(c0.window.iter().all(|b| *b == 0));
    assert_eq!(g.checkpoints[1].input.0, 500);
    assert_eq!(g.checkpoints[2].output.0, 140_000);
    assert_eq!(g.to_bytes(), blob, "v1 must re-encode to v1");

    // Edge cases accepted by Go: count=1 with no record (v1), count=0 with none (v2).
    let g = GzipCheckpoints::from_bytes(&hand_blob(&[], 1, 0)).unwrap();
    assert!(g.legacy_v1);
    assert_eq!(g.checkpoints.len(), 1);
    assert_eq!(g.to_bytes(), hand_blob(&[], 1, 0));
    let g = GzipCheckpoints::from_bytes(&hand_blob(&[], 0, 0)).unwrap();
    assert!(!g.legacy_v1 && g.checkpoints.is_empty());

    // Invalid lengths.
    assert!(matches!(
        GzipCheckpoints::from_bytes(&[]),
        Err(Error::EmptyCheckpoints)
    ));
    assert_eq!(
        GzipCheckpoints::from_bytes(&[]).unwrap_err().to_string(),
        "empty checkpoints"
    );
    for bad in [
        vec![1u8; 11],
        hand_blob(&[(10, 0, 0, 0)], 3, 0),
        hand_blob(&[(10, 0, 0, 0)], -1, 0),
        {
            let mut b = hand_blob(&[(10, 0, 0, 0)], 1, 0);
            b.push(0);
            b
        },
    ] {
        let err = GzipCheckpoints::from_bytes(&bad).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot convert blob to gzip_zinfo"),
            "{err}"
        );
    }
}

#[test]
fn legacy_v1_ztoc_extracts() {
    let (raw, tar, layer) = sample();
    let mut z = build(&layer, 50_000).unwrap();
    let n = (z.compression.max_span_id.0 + 1) as i32;
    // The v1 writer did not store checkpoint 0.
    let v2 = &z.compression.checkpoints;
    let mut v1 = n.to_le_bytes().to_vec();
    v1.extend_from_slice(&v2[4..12]);
    v1.extend_from_slice(&v2[12 + 32785..]);
    z.compression.checkpoints = v1.clone();
    let z = Ztoc::from_bytes(&z.to_bytes()).unwrap();
    assert_eq!(z.compression.checkpoints, v1);
    let zinfo = z.zinfo().unwrap();
    assert!(zinfo.checkpoints().unwrap().legacy_v1);
    for m in &raw.expected {
        let off = m.uncompressed_offset.0 as usize;
        let got = z.extract_file(&zinfo, &layer, &m.name).unwrap();
        assert!(got == tar[off..off + m.uncompressed_size as usize]);
    }
}

#[test]
fn tar_zinfo_layout() {
    let (_, tar, _) = sample();
    let z = build(&tar, 100_000).unwrap();
    assert_eq!(z.compression.algorithm, Compression::Uncompressed);
    let b = &z.compression.checkpoints;
    // Root uoffset, then a table with version 2, span_size and size (§1.6).
    assert_eq!(decode_tar_zinfo(b), (100_000, tar.len() as u64));
    // Big-endian guard: the span size 100000 = 0x0186a0 appears as a0 86 01 00 00 00 00 00.
    assert!(b.windows(8).any(|w| w == [0xa0, 0x86, 0x01, 0, 0, 0, 0, 0]));
}

#[test]
fn ztoc_root_layout() {
    let (_, _, layer) = sample();
    let z = build(&layer, 65_536).unwrap();
    let b = z.to_bytes();
    // No size prefix and no file identifier: the first word is the root table's uoffset.
    let root = u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
    assert!(root >= 4 && root < b.len());
    let vt = root - i32::from_le_bytes(b[root..root + 4].try_into().unwrap()) as usize;
    let vt_len = u16::from_le_bytes(b[vt..vt + 2].try_into().unwrap());
    assert_eq!(vt_len, 4 + 2 * 6, "Ztoc has 6 fields, all present");
    // compressed_archive_size (field 2) holds the blob size, little-endian.
    let off = u16::from_le_bytes(b[vt + 8..vt + 10].try_into().unwrap()) as usize;
    assert_eq!(
        &b[root + off..root + off + 8],
        &(layer.len() as u64).to_le_bytes()
    );
    // The algorithm equals the default (gzip) and is elided in the CompressionInfo vtable.
    let ci_field = u16::from_le_bytes(b[vt + 14..vt + 16].try_into().unwrap()) as usize;
    let ci = root
        + ci_field
        + u32::from_le_bytes(b[root + ci_field..root + ci_field + 4].try_into().unwrap()) as usize;
    let cvt = ci - i32::from_le_bytes(b[ci..ci + 4].try_into().unwrap()) as usize;
    let cvt_len = u16::from_le_bytes(b[cvt..cvt + 2].try_into().unwrap()) as usize;
    let algo_slot = if cvt_len > 4 {
        u16::from_le_bytes(b[cvt + 4..cvt + 6].try_into().unwrap())
    } else {
        0
    };
    assert_eq!(algo_slot, 0, "gzip (the default) is not written");
}

// ---------------------------------------------------------------------------------------------
// Golden decode with flatc.

fn flatc_json(schema: &str, bin: &[u8], dir: &Path, name: &str) -> Option<serde_json::Value> {
    if Command::new("flatc").arg("--version").output().is_err() {
        println!("SKIPPED: flatc not installed (Debian package flatbuffers-compiler)");
        return None;
    }
    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("testdata")
        .join(schema);
    let file = dir.join(format!("{name}.bin"));
    std::fs::write(&file, bin).unwrap();
    let out = Command::new("flatc")
        .args([
            "--json",
            "--raw-binary",
            "--strict-json",
            "--defaults-json",
            "-o",
        ])
        .arg(dir)
        .arg(&schema)
        .arg("--")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flatc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read(dir.join(format!("{name}.json"))).unwrap();
    Some(serde_json::from_slice(&json).unwrap())
}

fn s(v: &serde_json::Value) -> &str {
    v.as_str().unwrap()
}

#[test]
fn golden_flatc_decode() {
    let mut raw = RawTar::new();
    let mut d = Hdr::new("dir/", b'5');
    d.mode = 0o755;
    raw.entry(&d, b"");
    raw.pax(&[(b"SCHILY.xattr.user.a", b"1"), (b"mtime", b"1677661200.25")]);
    raw.file("dir/file", &noise(120_000, 3, true));
    let mut l = Hdr::new("dir/link", b'2');
    l.linkname = b"file".to_vec();
    raw.entry(&l, b"");
    let mut c = Hdr::new("dev/tty", b'3');
    (c.devmajor, c.devminor, c.uid, c.gid) = (5, 0, 0, 5);
    raw.entry(&c, b"");
    let tar = raw.finish(2, 0);
    let layer = gzip(&tar, 6);
    let dir = tempfile::tempdir().unwrap();

    for (layer, algo) in [(&layer, "Gzip"), (&tar, "Uncompressed")] {
        let z = build(layer, 40_000).unwrap();
        let Some(j) = flatc_json("ztoc.fbs", &z.to_bytes(), dir.path(), algo) else {
            return;
        };
        assert_eq!(s(&j["version"]), "0.9");
        assert_eq!(s(&j["build_tool_identifier"]), "AWS SOCI CLI v0.2");
        assert_eq!(j["compressed_archive_size"], layer.len() as u64);
        assert_eq!(j["uncompressed_archive_size"], z.uncompressed_archive_size);
        let meta = j["toc"]["metadata"].as_array().unwrap();
        assert_eq!(meta.len(), raw.expected.len());
        for (m, e) in meta.iter().zip(&raw.expected) {
            assert_eq!(s(&m["name"]).as_bytes(), e.name);
            assert_eq!(s(&m["type"]), e.kind.as_str());
            assert_eq!(m["uncompressed_offset"], e.uncompressed_offset.0);
            assert_eq!(m["uncompressed_size"], e.uncompressed_size);
            assert_eq!(s(&m["linkname"]).as_bytes(), e.linkname);
            assert_eq!(m["mode"], e.mode);
            assert_eq!(m["uid"], e.uid);
            assert_eq!(m["gid"], e.gid);
            assert_eq!(s(&m["uname"]).as_bytes(), e.uname);
            assert_eq!(s(&m["gname"]).as_bytes(), e.gname);
            assert_eq!(s(&m["mod_time"]), e.mod_time);
            assert_eq!(m["devmajor"], e.devmajor);
            assert_eq!(m["devminor"], e.devminor);
            let x: Vec<(Vec<u8>, Vec<u8>)> = m["xattrs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| {
                    (
                        s(&x["key"]).as_bytes().to_vec(),
                        s(&x["value"]).as_bytes().to_vec(),
                    )
                })
                .collect();
            let want: Vec<_> = e.xattrs.clone().into_iter().collect();
            assert_eq!(x, want, "xattrs are a vector sorted by key");
        }
        let ci = &j["compression_info"];
        assert_eq!(s(&ci["compression_algorithm"]), algo);
        assert_eq!(ci["max_span_id"], z.compression.max_span_id.0);
        let digests: Vec<&str> = ci["span_digests"]
            .as_array()
            .unwrap()
            .iter()
            .map(s)
            .collect();
        assert_eq!(digests, z.compression.span_digests);
        let cps: Vec<u8> = ci["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(cps, z.compression.checkpoints);

        if algo == "Uncompressed" {
            let Some(t) = flatc_json("tar_zinfo.fbs", &cps, dir.path(), "tarzinfo") else {
                return;
            };
            assert_eq!(t["version"], 2);
            assert_eq!(t["span_size"], 40_000);
            assert_eq!(t["size"], tar.len() as u64);
        }
    }
}

#[test]
fn checkpoint_struct_is_what_the_blob_says() {
    // Checkpoint values built in code encode to the documented bytes.
    let mut window = Box::new([0u8; 32768]);
    window[100] = 0xee;
    let g = GzipCheckpoints {
        span_size: 3,
        checkpoints: vec![Checkpoint {
            input: CompressedOffset(0x20),
            output: UncompressedOffset(0x0300),
            bits: 6,
            window,
        }],
        legacy_v1: false,
    };
    let b = g.to_bytes();
    assert_eq!(&b[..12], &[1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        &b[12..29],
        &[0x20, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 6]
    );
    assert_eq!(b[29 + 100], 0xee);
}
