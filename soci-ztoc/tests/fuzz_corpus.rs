//! Runs the fuzz targets' checks (`fuzz/checks.rs`, shared with the cargo-fuzz targets) over
//! the checked-in corpus in `fuzz/corpus/<target>/` and over random inputs, so the corpus is
//! exercised on the stable toolchain without libFuzzer.
//!
//! `SOCI_WRITE_CORPUS=1 cargo test -p soci-ztoc --test fuzz_corpus write_seed_corpus`
//! regenerates the seed corpus (small valid zTOCs, blobs and layers).

mod common;

#[allow(dead_code, unreachable_pub, clippy::unwrap_used)]
#[path = "../../fuzz/checks.rs"]
mod checks;

use std::path::PathBuf;

use common::*;
use proptest::prelude::*;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(corpus_dir(target))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .map(|p| {
                    let b = std::fs::read(&p).unwrap();
                    (p, b)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn run_corpus(target: &str, check: fn(&[u8])) {
    let files = corpus(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    for (path, data) in files {
        let r = std::panic::catch_unwind(|| check(&data));
        assert!(r.is_ok(), "{target}: {} fails", path.display());
    }
}

#[test]
fn corpus_ztoc_decode() {
    run_corpus("ztoc_decode", checks::ztoc_decode);
}

#[test]
fn corpus_checkpoints_decode() {
    run_corpus("checkpoints_decode", checks::checkpoints_decode);
}

#[test]
fn corpus_tar_walk() {
    run_corpus("tar_walk", checks::tar_walk);
}

#[test]
fn corpus_extract() {
    run_corpus("extract", checks::extract);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_ztoc_decode(b in prop::collection::vec(any::<u8>(), 0..400)) {
        checks::ztoc_decode(&b);
    }

    #[test]
    fn random_checkpoints_decode(b in prop::collection::vec(any::<u8>(), 0..100)) {
        checks::checkpoints_decode(&b);
    }

    #[test]
    fn random_tar_walk(b in prop::collection::vec(any::<u8>(), 0..3000)) {
        checks::tar_walk(&b);
    }

    /// Corpus entries with random byte flips: closer to what libFuzzer explores.
    #[test]
    fn mutated_corpus(
        target in 0..4usize,
        pick in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let (name, check): (&str, fn(&[u8])) = [
            ("ztoc_decode", checks::ztoc_decode as fn(&[u8])),
            ("checkpoints_decode", checks::checkpoints_decode),
            ("tar_walk", checks::tar_walk),
            ("extract", checks::extract),
        ][target];
        let files = corpus(name);
        let (_, mut data) = files[pick.index(files.len())].clone();
        if !data.is_empty() {
            for (i, x) in flips {
                let i = i.index(data.len());
                data[i] ^= x;
            }
        }
        check(&data);
    }
}

/// Writes the seed corpus. Only with SOCI_WRITE_CORPUS=1; otherwise checks it is present.
#[test]
fn write_seed_corpus() {
    if std::env::var_os("SOCI_WRITE_CORPUS").is_none() {
        for t in ["ztoc_decode", "checkpoints_decode", "tar_walk", "extract"] {
            assert!(
                !corpus(t).is_empty(),
                "run with SOCI_WRITE_CORPUS=1 to seed {t}"
            );
        }
        return;
    }
    let write = |target: &str, name: &str, data: &[u8]| {
        assert!(
            data.len() < 100 * 1024,
            "{target}/{name} is {} bytes",
            data.len()
        );
        std::fs::create_dir_all(corpus_dir(target)).unwrap();
        std::fs::write(corpus_dir(target).join(name), data).unwrap();
    };
    // Small tars: a few entry kinds, PAX and GNU long names.
    let mut raw = RawTar::new();
    raw.file("a.txt", b"hello\n");
    raw.pax(&[(b"SCHILY.xattr.user.k", b"\xff\x00v"), (b"mtime", b"1.5")]);
    raw.file("pax", b"x");
    raw.gnu_long(b'L', "l".repeat(120).as_bytes());
    raw.file("short", &noise(1500, 1, true));
    let mut s = Hdr::new("sym", b'2');
    s.linkname = b"a.txt".to_vec();
    raw.entry(&s, b"");
    let mut d = Hdr::new("dev", b'3');
    (d.devmajor, d.devminor) = (1, 5);
    raw.entry(&d, b"");
    let tar1 = raw.finish(2, 0);
    let mut raw = RawTar::new();
    raw.file("big", &noise(60_000, 2, true));
    raw.file("rnd", &noise(3_000, 3, false));
    let tar2 = raw.finish(2, 512);
    write("tar_walk", "kinds.tar", &tar1);
    write("tar_walk", "two-files.tar", &tar2[..tar2.len().min(90_000)]);
    write("tar_walk", "empty.tar", &[0; 1024]);

    for (name, tar, span) in [("kinds", &tar1, 0u64), ("two", &tar2, u64::MAX / 2)] {
        for (kind, layer) in [("gz", gzip(tar, 6)), ("tar", tar.clone())] {
            let z = build(&layer, if kind == "tar" { 4096 } else { span }).unwrap();
            let zb = z.to_bytes();
            if zb.len() < 100 * 1024 {
                write("ztoc_decode", &format!("{name}-{kind}.ztoc"), &zb);
            }
            if kind == "gz" && z.compression.checkpoints.len() < 100 * 1024 {
                write(
                    "checkpoints_decode",
                    &format!("{name}.blob"),
                    &z.compression.checkpoints,
                );
            }
            let mut pair = (zb.len() as u32).to_le_bytes().to_vec();
            pair.extend_from_slice(&zb);
            pair.extend_from_slice(&layer);
            if pair.len() < 100 * 1024 {
                write("extract", &format!("{name}-{kind}.pair"), &pair);
            }
        }
    }
    // A legacy v1 blob: count = 2, one stored record.
    let mut v1 = 2i32.to_le_bytes().to_vec();
    v1.extend_from_slice(&65_536i64.to_le_bytes());
    v1.extend_from_slice(&100i64.to_le_bytes());
    v1.extend_from_slice(&70_000i64.to_le_bytes());
    v1.push(3);
    v1.extend_from_slice(&[0x55; 32768]);
    write("checkpoints_decode", "legacy-v1.blob", &v1);
    write("checkpoints_decode", "header-only.blob", &v1[..12]);
}
