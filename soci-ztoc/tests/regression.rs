//! Regression tests for bugs found by the integration and property tests, one per bug.

mod common;

use common::*;

/// Checkpoint windows were taken from a 32 KiB ring that was also zlib's output buffer; zlib-rs
/// may write scratch bytes past the output it reports, which clobbered the oldest ~30 bytes of
/// the window. Windows must equal the 32 KiB of stream before `out`, byte for byte.
#[test]
fn r_checkpoint_window_not_clobbered_by_inflate() {
    let mut raw = RawTar::new();
    raw.file("x", &noise(300_000, 31, false));
    raw.file("y", &noise(100_000, 32, true));
    let tar = raw.finish(2, 0);
    for level in [0, 9] {
        let layer = gzip(&tar, level);
        let z = build(&layer, 1).unwrap();
        let (_, cps) = parse_blob(&z.compression.checkpoints);
        assert!(cps.len() > 10);
        for c in &cps {
            assert!(
                c.window == window_before(&tar, c.output),
                "level {level}: window of checkpoint at out={}",
                c.output
            );
        }
    }
}

/// A reader that returns a few bytes per call: the format was sniffed from the first read
/// only, so a gzip layer whose first read returned 1 byte was parsed as a plain tar.
#[test]
fn r_magic_sniffed_across_short_reads() {
    struct Dribble<'a>(&'a [u8], usize);
    impl std::io::Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.1 = self.1 % 3 + 1;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut raw = RawTar::new();
    raw.file("a", &noise(50_000, 1, true));
    let tar = raw.finish(2, 0);
    let layer = gzip(&tar, 6);
    let want = build(&layer, 8192).unwrap().to_bytes();
    for first in 0..3 {
        let z = soci_ztoc::ZtocBuilder::new()
            .span_size(8192)
            .build(Dribble(&layer, first))
            .unwrap();
        assert_eq!(z.to_bytes(), want);
    }
    let zstd = [0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0];
    let err = soci_ztoc::ZtocBuilder::new()
        .build(Dribble(&zstd, 0))
        .unwrap_err();
    assert_eq!(err.to_string(), "unsupported compression: zstd");
}

/// A checkpoint inside the zero padding after the end-of-archive marker made the last span
/// start past `uncompressed_archive_size`; the builder then rejected its own zTOC ("span
/// offsets are non-monotonic") although the reference producer writes it. Found with a
/// GNU-tar-like 10 KiB padding and span size 0; forced here with 1 MiB of padding.
#[test]
fn r_last_checkpoint_in_trailing_padding() {
    let mut raw = RawTar::new();
    raw.file("a", &noise(40_000, 5, true));
    raw.file("b", b"small");
    let tar = raw.finish(2, 1 << 20);
    let end = raw.tar_size as usize;
    // zlib-rs level 1 ends blocks inside the padding; a second member starting in the
    // padding puts a checkpoint there with any compressor.
    let layers = [gzip(&tar, 1), gzip_members(&tar, &[end + 512], 6)];
    for (level, layer) in layers.iter().enumerate() {
        for span in [0, 10_000].into_iter().take(2 - level) {
            let z = check(&Fixture::from_raw(layer, &raw, &tar), span);
            let (_, cps) = parse_blob(&z.compression.checkpoints);
            assert!(
                cps.last().unwrap().output > z.uncompressed_archive_size,
                "layer {level} span {span}: no checkpoint in the padding"
            );
            let zinfo = z.zinfo().unwrap();
            let last = zinfo.span(zinfo.max_span_id()).unwrap();
            assert!(last.uncompressed.is_empty());
            assert_eq!(
                zinfo
                    .read_range(
                        &layer,
                        soci_ztoc::UncompressedOffset(0),
                        z.uncompressed_archive_size
                    )
                    .unwrap(),
                tar[..z.uncompressed_archive_size as usize]
            );
        }
    }
}

/// A zTOC that claims a huge file (sizes are not authenticated by the blob digest alone)
/// made extraction allocate the claimed size up front, aborting the process on allocation
/// failure. The output now grows with the data actually inflated, and the lie is an error.
#[test]
fn r_extract_does_not_trust_claimed_sizes_for_allocation() {
    let mut raw = RawTar::new();
    raw.file("a", &noise(50_000, 3, true));
    let tar = raw.finish(2, 0);
    let layer = gzip(&tar, 6);
    let mut z = build(&layer, 0).unwrap();
    let huge = 1u64 << 46; // 64 TiB
    z.uncompressed_archive_size = huge;
    z.toc[0].uncompressed_size = huge - 1024;
    let zinfo = z.zinfo().unwrap();
    let err = z.extract_file(&zinfo, &layer, b"a").unwrap_err();
    assert!(matches!(err, soci_ztoc::Error::ShortSpan { .. }), "{err}");
    let err = zinfo
        .read_range(&layer, soci_ztoc::UncompressedOffset(0), huge)
        .unwrap_err();
    assert!(matches!(err, soci_ztoc::Error::ShortSpan { .. }), "{err}");
}
