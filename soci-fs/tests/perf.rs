//! Rough numbers, not assertions: `cargo test --release -p soci-fs --test perf -- --ignored --nocapture`.

mod common;

use std::os::unix::fs::FileExt;
use std::time::Instant;

use soci_fs::{
    BackgroundFetchOptions, BackgroundFetcher, FsOptions, MountOptions, SpanOptions, SpanState,
};

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("rss");
    pages * 4
}

fn drop_cache(p: &std::path::Path) {
    let f = std::fs::File::open(p).expect("open");
    nix::fcntl::posix_fadvise(
        &f,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .expect("fadvise");
}

fn read_all(p: &std::path::Path) -> (usize, f64) {
    let t = Instant::now();
    let f = std::fs::File::open(p).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = f.read_at(&mut buf, off).expect("read");
        if n == 0 {
            break;
        }
        off += n as u64;
    }
    (off as usize, t.elapsed().as_secs_f64())
}

#[test]
#[ignore = "measurement"]
fn numbers() {
    skip_without_fuse!();
    const LEN: usize = 64 << 20;
    let mut tar = tar::Builder::new(Vec::new());
    let mut data = common::noise(LEN / 4, 3);
    data.extend((0..LEN - LEN / 4).map(|i| (i % 251) as u8 ^ (i / 4096) as u8));
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "data.bin", &data[..])
        .expect("append");
    let layer = common::layer_from_tar(tar.into_inner().expect("tar"), 4 << 20);
    let m = common::mount_layer(
        &layer,
        SpanOptions::default(),
        FsOptions::default(),
        MountOptions::default(),
    );
    let p = m.path().join("data.bin");
    let t = Instant::now();
    let f = std::fs::File::open(&p).expect("open");
    let mut b = [0u8; 4096];
    if let Err(e) = f.read_exact_at(&mut b, 10 << 20) {
        let state = m
            .path()
            .join(".soci-snapshotter")
            .join(format!("{}.json", layer.digest));
        panic!(
            "{e}: {}",
            std::fs::read_to_string(state).unwrap_or_default()
        );
    }
    println!(
        "cold 4 KiB read (fetch + verify + inflate one 4 MiB span): {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let (n, s) = read_all(&p);
    println!(
        "cold sequential read: {:.0} MiB/s ({} spans)",
        n as f64 / s / 1048576.0,
        m.spans.span_count()
    );
    drop_cache(&p);
    let (n, s) = read_all(&p);
    println!(
        "warm read through daemon (span cache, kernel cache dropped): {:.0} MiB/s",
        n as f64 / s / 1048576.0
    );
    let local = layer.dir.path().join("plain.bin");
    std::fs::write(&local, &data).expect("write");
    drop_cache(&local);
    let (n, s) = read_all(&local);
    println!(
        "local ext4 file after DONTNEED: {:.0} MiB/s",
        n as f64 / s / 1048576.0
    );
    let fetcher = BackgroundFetcher::new(BackgroundFetchOptions::default());
    fetcher.add_layer(&m.spans);
    while (0..m.spans.span_count()).any(|i| {
        matches!(
            m.spans.state(i),
            SpanState::Unrequested | SpanState::Requested
        )
    }) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(f);
    drop_cache(&p);
    let (n, s) = read_all(&p);
    println!(
        "read after all spans local (passthrough opens so far: {}): {:.0} MiB/s",
        m.metrics.snapshot().passthrough_opens,
        n as f64 / s / 1048576.0
    );
    drop_cache(&p);
    let (n, s) = read_all(&p);
    println!(
        "second passthrough read, kernel cache dropped: {:.0} MiB/s",
        n as f64 / s / 1048576.0
    );
    drop(m);

    // Memory per entry of the tree.
    let mut tar = tar::Builder::new(Vec::new());
    let entries = 100_000;
    for i in 0..entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(
            &mut h,
            format!("usr/share/dir{}/file-{i}.txt", i % 100),
            &b""[..],
        )
        .expect("append");
    }
    let big = common::layer_from_tar(tar.into_inner().expect("tar"), 4 << 20);
    let before = rss_kib();
    let tree = soci_fs::Tree::from_ztoc(&big.ztoc).expect("tree");
    let after = rss_kib();
    println!(
        "tree of {} entries: {} KiB RSS, {:.0} bytes/entry (ztoc itself not counted)",
        tree.len(),
        after.saturating_sub(before),
        (after.saturating_sub(before) * 1024) as f64 / entries as f64
    );
    drop(tree);

    // Warm `stat` of every file of a 10k-file layer, against the same tree extracted locally.
    let mut tar = tar::Builder::new(Vec::new());
    let files = 10_000;
    for i in 0..files {
        let mut h = tar::Header::new_gnu();
        h.set_size(16);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(
            &mut h,
            format!("srv/d{}/f{i}.txt", i % 50),
            &b"0123456789abcdef"[..],
        )
        .expect("append");
    }
    let small = common::layer_from_tar(tar.into_inner().expect("tar"), 4 << 20);
    let local = tempfile::tempdir().expect("tempdir");
    let st = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&small.tar_path)
        .arg("-C")
        .arg(local.path())
        .status()
        .expect("tar -x");
    assert!(st.success());
    let m = common::mount_default(&small);
    let names: Vec<String> = (0..files)
        .map(|i| format!("srv/d{}/f{i}.txt", i % 50))
        .collect();
    let stat_all = |root: &std::path::Path| {
        let t = Instant::now();
        for n in &names {
            std::fs::symlink_metadata(root.join(n)).expect("stat");
        }
        t.elapsed().as_secs_f64()
    };
    stat_all(m.path()); // warm the kernel's entry/attr caches and our tree
    stat_all(local.path());
    let fuse = (0..3).map(|_| stat_all(m.path())).fold(f64::MAX, f64::min);
    let disk = (0..3)
        .map(|_| stat_all(local.path()))
        .fold(f64::MAX, f64::min);
    println!(
        "warm stat of {files} files: FUSE {:.1} ms, local dir {:.1} ms ({:.2}x)",
        fuse * 1e3,
        disk * 1e3,
        fuse / disk
    );
}
