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
