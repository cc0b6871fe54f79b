//! `inflate-only LAYER.gz`: single-threaded flate2/zlib-rs inflate of a gzip layer to a sink.
//! Prints `inflate_only bytes_out=<n> secs=<t> mb_per_s=<uncompressed MB/s>`.

use std::time::Instant;

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .expect("usage: inflate-only LAYER.gz");
    let f = std::fs::File::open(path)?;
    let t = Instant::now();
    let n = soci_benches::inflate_only(f)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "inflate_only bytes_out={n} secs={secs:.3} mb_per_s={:.1}",
        n as f64 / secs / 1e6
    );
    Ok(())
}
