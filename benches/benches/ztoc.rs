//! zTOC build throughput against inflate-only on the same realistic layer, and small-file
//! extraction. Scenario names are stable: `ztoc_build/gzip_<size>_span4MiB`,
//! `inflate_only/<size>`, `extract_small_file/<size>`.
//!
//! Size: `SOCI_BENCH_MIB` (default 32). Judge by the ratio ztoc_build / inflate_only measured
//! in the same run, never by absolute times on a shared machine.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use soci_ztoc::{EntryType, ZtocBuilder, DEFAULT_SPAN_SIZE};

fn benches(c: &mut Criterion) {
    let mib: u64 = std::env::var("SOCI_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let tar = soci_benches::make_tar(mib << 20);
    let layer = soci_benches::gzip(&tar, 6);
    let size = format!("{mib}MiB");

    let mut g = c.benchmark_group("ztoc_build");
    g.throughput(Throughput::Bytes(tar.len() as u64));
    g.sample_size(10);
    g.bench_function(format!("gzip_{size}_span4MiB"), |b| {
        b.iter(|| {
            ZtocBuilder::new()
                .span_size(DEFAULT_SPAN_SIZE)
                .build(black_box(&layer[..]))
                .expect("build")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("inflate_only");
    g.throughput(Throughput::Bytes(tar.len() as u64));
    g.sample_size(10);
    g.bench_function(&size, |b| {
        b.iter(|| soci_benches::inflate_only(black_box(&layer[..])).expect("inflate"))
    });
    g.finish();

    let ztoc = ZtocBuilder::new().build(&layer[..]).expect("build");
    let zinfo = ztoc.zinfo().expect("zinfo");
    // A small file in the middle of the layer.
    let small = ztoc
        .toc
        .iter()
        .filter(|m| m.kind == EntryType::Regular && (100..4096).contains(&m.uncompressed_size))
        .nth(ztoc.toc.len() / 4)
        .or_else(|| ztoc.toc.iter().find(|m| m.kind == EntryType::Regular))
        .expect("a regular file")
        .name
        .clone();
    let mut g = c.benchmark_group("extract_small_file");
    g.sample_size(20);
    g.bench_function(&size, |b| {
        b.iter(|| {
            ztoc.extract_file(&zinfo, &layer, black_box(&small))
                .expect("extract")
        })
    });
    g.finish();
}

criterion_group!(ztoc, benches);
criterion_main!(ztoc);
