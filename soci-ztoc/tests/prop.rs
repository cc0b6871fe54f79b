//! Property tests: zTOC encode/decode round trip, extraction through checkpoints equals the
//! same slice of a full decompression, checkpoint windows, and decoders never panic.
//!
//! Case counts are modest (the whole soci-ztoc suite must stay under 2 minutes in debug on 2
//! cores); raise them with `PROPTEST_CASES=...`.

mod common;

use common::*;
use proptest::prelude::*;
use soci_ztoc::{
    Compression, CompressionInfo, EntryType, FileMetadata, GzipCheckpoints, SpanId,
    UncompressedOffset, Ztoc,
};

fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig::with_cases(n)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// Values the format can carry: int64 fields hold at most i64::MAX.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![0..100_000u64, 0..=i64::MAX as u64]
}

fn entry_type() -> impl Strategy<Value = EntryType> {
    prop_oneof![
        Just(EntryType::Regular),
        Just(EntryType::Dir),
        Just(EntryType::Symlink),
        Just(EntryType::Hardlink),
        Just(EntryType::Char),
        Just(EntryType::Block),
        Just(EntryType::Fifo),
    ]
}

prop_compose! {
    fn file_metadata()(
        name in bytes(40),
        kind in entry_type(),
        off in size(),
        sz in size(),
        linkname in bytes(20),
        mode in any::<i64>(),
        uid in any::<u32>(),
        gid in any::<u32>(),
        uname in bytes(10),
        gname in bytes(10),
        mod_time in ".{0,30}",
        devmajor in any::<i64>(),
        devminor in any::<i64>(),
        xattrs in prop::collection::btree_map(bytes(20), bytes(20), 0..4),
    ) -> FileMetadata {
        FileMetadata {
            name,
            kind,
            uncompressed_offset: UncompressedOffset(off),
            uncompressed_size: sz,
            linkname,
            mode,
            uid,
            gid,
            uname,
            gname,
            mod_time,
            devmajor,
            devminor,
            xattrs,
        }
    }
}

prop_compose! {
    fn ztoc()(
        version in ".{0,5}",
        build_tool_identifier in ".{0,20}",
        compressed_archive_size in size(),
        uncompressed_archive_size in size(),
        toc in prop::collection::vec(file_metadata(), 0..6),
        algorithm in prop_oneof![Just(Compression::Gzip), Just(Compression::Uncompressed)],
        max_span_id in 0..=i32::MAX as u32,
        span_digests in prop::collection::vec("sha256:[0-9a-f]{0,64}", 0..4),
        checkpoints in bytes(200),
    ) -> Ztoc {
        Ztoc {
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
        }
    }
}

/// One file of a random layer: size and kind of content.
#[derive(Debug, Clone)]
enum Content {
    Text(usize, u64),
    Random(usize, u64),
    Zeros(usize),
}

impl Content {
    fn bytes(&self) -> Vec<u8> {
        match *self {
            Content::Text(n, s) => noise(n, s, true),
            Content::Random(n, s) => noise(n, s, false),
            Content::Zeros(n) => vec![0; n],
        }
    }
}

fn content() -> impl Strategy<Value = Content> {
    let len = prop_oneof![0..600usize, 0..40_000usize];
    (len, any::<u64>(), 0..3u8).prop_map(|(n, s, k)| match k {
        0 => Content::Text(n, s),
        1 => Content::Random(n, s),
        _ => Content::Zeros(n),
    })
}

fn span_size() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 1..100_000u64, Just(u64::MAX / 2)]
}

#[derive(Debug, Clone)]
struct Layer {
    files: Vec<Content>,
    level: u32,
    /// Member split points as fractions (per mille) of the tar length; never at 0.
    cuts: Vec<u16>,
    padding: usize,
}

fn layer() -> impl Strategy<Value = Layer> {
    (
        prop::collection::vec(content(), 1..8),
        0..=9u32,
        prop::collection::vec(1..=1000u16, 0..4),
        prop_oneof![Just(0usize), 0..12_000usize],
    )
        .prop_map(|(files, level, mut cuts, padding)| {
            cuts.sort();
            Layer {
                files,
                level,
                cuts,
                padding,
            }
        })
}

fn make(l: &Layer) -> (Vec<u8>, Vec<u8>, u64) {
    let mut raw = RawTar::new();
    for (i, c) in l.files.iter().enumerate() {
        raw.file(format!("f{i}"), &c.bytes());
    }
    let tar = raw.finish(2, l.padding);
    let cuts: Vec<usize> = l
        .cuts
        .iter()
        .map(|&c| (tar.len() * usize::from(c) / 1000).max(1))
        .collect();
    let layer = gzip_members(&tar, &cuts, l.level);
    (tar, layer, raw.tar_size)
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn ztoc_encode_decode_round_trip(z in ztoc()) {
        let b = z.to_bytes();
        let back = Ztoc::from_bytes(&b).unwrap();
        prop_assert_eq!(&back, &z);
        prop_assert_eq!(back.to_bytes(), b);
    }

    #[test]
    fn decoders_never_panic(b in bytes(600)) {
        let _ = Ztoc::from_bytes(&b);
        let _ = GzipCheckpoints::from_bytes(&b);
        if let Ok(z) = Ztoc::from_bytes(&b) {
            // Whatever decodes re-encodes to something that decodes to the same value.
            let again = Ztoc::from_bytes(&z.to_bytes()).unwrap();
            prop_assert_eq!(again, z);
        }
    }
}

proptest! {
    #![proptest_config(cases(32))]

    #[test]
    fn read_range_equals_full_decompression(
        l in layer(),
        span in span_size(),
        ranges in prop::collection::vec((any::<u64>(), 0..70_000u64), 1..6),
    ) {
        let (tar, layer, tar_size) = make(&l);
        prop_assert_eq!(&gunzip(&layer), &tar);
        let z = build(&layer, span).unwrap();
        prop_assert_eq!(z.uncompressed_archive_size, tar_size);
        let zinfo = z.zinfo().unwrap();
        if span == u64::MAX / 2 {
            prop_assert_eq!(zinfo.span_count(), 1);
        }
        for (off, len) in ranges {
            let off = off % tar_size;
            let len = len.min(tar_size - off);
            let got = zinfo.read_range(&layer, UncompressedOffset(off), len).unwrap();
            prop_assert!(got == tar[off as usize..(off + len) as usize], "range {}+{}", off, len);
        }
        // Checkpoint windows are the 32 KiB of output before `out`.
        let (got_span, cps) = parse_blob(&z.compression.checkpoints);
        prop_assert_eq!(got_span, span);
        prop_assert_eq!((cps[0].input, cps[0].output, cps[0].bits), (10, 0, 0));
        for c in &cps {
            prop_assert!(c.window == window_before(&tar, c.output), "window at {}", c.output);
        }
        // §2.2 placement: the checkpoints are the greedy choice over every block boundary
        // (span 0 stops at all of them), whatever the builder does between checkpoints.
        let all = parse_blob(&build(&layer, 0).unwrap().compression.checkpoints).1;
        let mut want = vec![&all[0]];
        for c in &all[1..] {
            if c.output - want.last().unwrap().output > span {
                want.push(c);
            }
        }
        let key = |c: &RawCheckpoint| (c.input, c.output, c.bits);
        prop_assert_eq!(
            cps.iter().map(key).collect::<Vec<_>>(),
            want.into_iter().map(key).collect::<Vec<_>>()
        );
        // Span digests are the sha256 of the §2.3 ranges.
        let ranges = span_ranges(&cps, layer.len() as u64, tar_size);
        for (i, (c, _)) in ranges.iter().enumerate() {
            prop_assert_eq!(&z.compression.span_digests[i], &sha256(&layer[c.start as usize..c.end as usize]));
        }
    }

    #[test]
    fn plain_tar_read_range(
        l in layer(),
        span in 1..50_000u64,
        ranges in prop::collection::vec((any::<u64>(), 0..70_000u64), 1..6),
    ) {
        let (tar, _, tar_size) = make(&l);
        let z = build(&tar, span).unwrap();
        prop_assert_eq!(z.uncompressed_archive_size, tar_size);
        let zinfo = z.zinfo().unwrap();
        for (off, len) in ranges {
            let off = off % tar_size;
            let len = len.min(tar_size - off);
            let got = zinfo.read_range(&tar, UncompressedOffset(off), len).unwrap();
            prop_assert!(got == tar[off as usize..(off + len) as usize]);
        }
    }

    #[test]
    fn mutated_ztoc_never_panics(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ranges in prop::collection::vec((any::<u64>(), 0..5_000u64), 1..4),
    ) {
        let (tar, layer, _) = fixed_layer();
        let mut b = fixed_ztoc().clone();
        for (i, x) in flips {
            let i = i.index(b.len());
            b[i] ^= x;
        }
        let Ok(z) = Ztoc::from_bytes(&b) else { return Ok(()); };
        let _ = z.layout();
        let Ok(zinfo) = z.zinfo() else { return Ok(()); };
        // The blob size is checked against the real blob by every caller (CLI, snapshotter).
        if z.compressed_archive_size != layer.len() as u64 {
            return Ok(());
        }
        for (off, len) in ranges {
            let r = zinfo.read_range(&layer, UncompressedOffset(off % (tar.len() as u64 + 10)), len);
            if let Ok(got) = r {
                prop_assert_eq!(got.len() as u64, len);
            }
        }
        for m in &z.toc {
            if m.uncompressed_size < 1 << 20 {
                let _ = z.extract_file(&zinfo, &layer, &m.name);
            }
        }
    }
}

fn fixed_layer() -> &'static (Vec<u8>, Vec<u8>, u64) {
    static L: std::sync::OnceLock<(Vec<u8>, Vec<u8>, u64)> = std::sync::OnceLock::new();
    L.get_or_init(|| {
        make(&Layer {
            files: vec![
                Content::Text(30_000, 1),
                Content::Random(20_000, 2),
                Content::Zeros(100),
            ],
            level: 6,
            cuts: vec![500],
            padding: 0,
        })
    })
}

fn fixed_ztoc() -> &'static Vec<u8> {
    static Z: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    Z.get_or_init(|| build(&fixed_layer().1, 8_000).unwrap().to_bytes())
}

#[test]
fn empty_first_member_is_refused_not_mis_indexed() {
    // A cut at 0 makes an empty first member: two checkpoints at out = 0 (§2.2 point 8).
    let (tar, _, _) = fixed_layer();
    let layer = gzip_members(tar, &[0], 6);
    assert!(build(&layer, 0).is_err());
}
