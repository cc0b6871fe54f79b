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
