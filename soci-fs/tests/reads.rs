//! Reading through the mount: exact bytes under concurrency, failures and recovery, fetching
//! only touched spans, single-flight, timeouts, unmount with reads in flight, background
//! fetch, prefetch and passthrough.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use soci_fs::{
    BackgroundFetchOptions, BackgroundFetcher, BlobSource, ConcurrencyLimit, Fault, FileSource,
    FsOptions, Metrics, MountOptions, Observer, Operation, RequestKind, SourceError, SpanManager,
    SpanOptions, SpanState,
};

fn big_entry(layer: &common::Layer) -> (u64, u64) {
    let e = layer.ztoc.find(b"big.bin").expect("big.bin in toc");
    (e.uncompressed_offset.0, e.uncompressed_size)
}

#[test]
fn concurrent_random_reads_are_exact() {
    skip_without_fuse!();
    let layer = common::fixture_layer();
    let m = common::mount_default(&layer);
    let expected = Arc::new(common::big_content());
    let path = m.path().join("big.bin");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let path = path.clone();
            let expected = expected.clone();
            std::thread::spawn(move || {
                let f = std::fs::File::open(&path).expect("open");
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                for _ in 0..150 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let off = (seed % expected.len() as u64) as usize;
                    let len = ((seed >> 32) % 200_000) as usize + 1;
                    let mut buf = vec![0u8; len];
                    let n = f.read_at(&mut buf, off as u64).expect("read_at");
                    let want = &expected[off..(off + len).min(expected.len())];
                    assert!(n > 0 || want.is_empty());
                    assert_eq!(&buf[..n], &want[..n], "bytes at {off}+{n}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("reader thread");
    }
    assert_eq!(common::read(&path).expect("whole"), *expected);
    // Single flight: no span range was fetched twice.
    for (range, n) in m.source.request_counts() {
        assert_eq!(n, 1, "range {range:?} fetched {n} times");
    }
}

#[test]
fn only_touched_spans_are_fetched() {
    skip_without_fuse!();
    let layer = common::fixture_layer();
    let m = common::mount_default(&layer);
    let zinfo = layer.ztoc.zinfo().expect("zinfo");
    assert!(
        zinfo.span_count() >= 5,
        "fixture has many spans: {}",
        zinfo.span_count()
    );
    let header_reads = m.source.reads();
    let (off, size) = big_entry(&layer);
    let f = std::fs::File::open(m.path().join("big.bin")).expect("open");
    nix::fcntl::posix_fadvise(&f, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM)
        .expect("fadvise");
    let at = size / 2;
    let mut buf = [0u8; 16];
    f.read_exact_at(&mut buf, at).expect("read");
    assert_eq!(
        &buf[..],
        &common::big_content()[at as usize..at as usize + 16]
    );
    // Allowed: the spans of the file's tar header (verification) and of the page read.
    let header = layer
        .ztoc
        .layout()
        .expect("layout")
        .into_iter()
        .find(|l| layer.ztoc.toc[l.index].name == b"big.bin")
        .expect("layout entry");
    let page = (off + at) / 4096 * 4096;
    let mut allowed = std::collections::HashSet::new();
    for o in [
        header.header_offset,
        off - 1,
        page.max(off),
        (off + at + 4096).min(off + size - 1),
    ] {
        allowed.insert(
            zinfo
                .span(zinfo.span_of(soci_ztoc::UncompressedOffset(o)))
                .expect("span")
                .compressed,
        );
    }
    let fetched: Vec<_> = m.source.requests()[header_reads as usize..]
        .iter()
        .map(|(r, _)| r.clone())
        .collect();
    assert!(!fetched.is_empty());
    for r in &fetched {
        assert!(allowed.contains(r), "fetched {r:?}, allowed {allowed:?}");
    }
    assert!(fetched.len() <= 3, "{fetched:?}");
    let untouched = (0..m.spans.span_count())
        .filter(|id| m.spans.state(*id) == SpanState::Unrequested)
        .count();
    assert!(untouched >= zinfo.span_count() as usize - 3);
    // Reading the same bytes again is served from the cache.
    let before = m.source.reads();
    f.read_exact_at(&mut buf, at).expect("read again");
    drop(f);
    let g = std::fs::File::open(m.path().join("big.bin")).expect("reopen");
    g.read_exact_at(&mut buf, at).expect("read via new handle");
    assert_eq!(m.source.reads(), before);
    assert_eq!(
        m.metrics.snapshot().on_demand_span_fetches as usize,
        fetched.len()
    );
}

#[test]
fn source_errors_and_corruption_give_eio_then_recover() {
    skip_without_fuse!();
    let layer = common::fixture_layer();
    let m = common::mount_layer(
        &layer,
        SpanOptions::default(),
        FsOptions::default(),
        MountOptions::default(),
    );
    let path = m.path().join("big.bin");
    m.source.set_sticky(Some(Fault::Error));
    let err = common::read(&path).expect_err("source down");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    m.source.set_sticky(None);
    assert_eq!(
        common::read(&path).expect("recovered"),
        common::big_content()
    );
    let s = m.metrics.snapshot();
    assert!(s.source_errors >= 1 && s.fuse_read_failures >= 1, "{s:?}");

    // Digest mismatch on a fresh file region.
    let hosts = m.path().join("etc/hosts");
    let cached: Vec<u32> = (0..m.spans.span_count())
        .filter(|id| m.spans.state(*id) == SpanState::Unrequested)
        .collect();
    if !cached.is_empty() {
        m.source.set_sticky(Some(Fault::Corrupt));
        let _ = common::read(&hosts);
        m.source.set_sticky(None);
    }
    assert_eq!(
        common::read(&hosts).expect("hosts"),
        b"127.0.0.1 localhost\n"
    );
    let state = std::fs::read_to_string(
        m.path()
            .join(".soci-snapshotter")
            .join(format!("{}.json", layer.digest)),
    )
    .expect("state");
    assert!(state.contains("\"error\":"), "{state}");
}

#[test]
fn digest_mismatch_is_eio_and_counted() {
    skip_without_fuse!();
    let layer = common::fixture_layer();
    let m = common::mount_default(&layer);
    m.source.set_sticky(Some(Fault::Corrupt));
    let err = common::read(m.path().join("big.bin")).expect_err("corrupt");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(m.metrics.snapshot().digest_mismatches >= 1);
    m.source.set_sticky(None);
    assert_eq!(
        common::read(m.path().join("big.bin")).expect("ok"),
        common::big_content()
    );
}

#[test]
fn hung_source_times_out_and_unmount_is_clean() {
    skip_without_fuse!();
    let layer = common::fixture_layer();
    let mut opts = SpanOptions::default();
    opts.fetch_timeout = Duration::from_millis(300);
    let mut m = common::mount_layer(&layer, opts, FsOptions::default(), MountOptions::default());
    m.source.set_sticky(Some(Fault::Hang));
    let t0 = Instant::now();
    let err = common::read(m.path().join("big.bin")).expect_err("hung");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert!(m.metrics.snapshot().timeouts >= 1);
    // Reads in flight while unmounting: they fail, unmount returns promptly.
    let path = m.path().join("big.bin");
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let p = path.clone();
            std::thread::spawn(move || common::read(p).is_ok())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    m.unmount();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "unmount took {:?}",
        t0.elapsed()
    );
    m.source.set_sticky(None);
    m.source.release();
    for r in readers {
        assert!(
            !r.join().expect("reader"),
            "read should fail during unmount"
        );
    }
    let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
    assert!(
        !mounts.contains(m.path().to_str().expect("utf8")),
        "stale mount"
    );
}

#[test]
fn single_flight_under_many_waiters() {
    skip_without_fuse!();
    let layer = common::fixture_layer();
    let m = common::mount_default(&layer);
    m.source.set_delay(Duration::from_millis(200));
    let (_, size) = big_entry(&layer);
    let path = m.path().join("big.bin");
    let threads: Vec<_> = (0..16u64)
        .map(|i| {
            let p = path.clone();
            std::thread::spawn(move || {
                let f = std::fs::File::open(p).expect("open");
                let mut b = [0u8; 100];
                f.read_exact_at(&mut b, size / 3 + i * 7).expect("read");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    for (range, n) in m.source.request_counts() {
        assert_eq!(n, 1, "range {range:?} fetched {n} times");
    }
}

/// Runs the background fetcher until every span of the mount is local; returns the fetcher.
fn fetch_everything(m: &common::Mounted) -> BackgroundFetcher {
    let fetcher = BackgroundFetcher::new(BackgroundFetchOptions::default());
    assert!(fetcher.add_layer(&m.spans));
    let deadline = Instant::now() + Duration::from_secs(30);
    while (0..m.spans.span_count()).any(|id| {
        !matches!(
            m.spans.state(id),
            SpanState::Fetched | SpanState::Uncompressed
        )
    }) {
        assert!(Instant::now() < deadline, "background fetch did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    fetcher
}

#[test]
fn background_fetch_then_passthrough() {
    skip_without_fuse!();
    let layer = common::fixture_layer();
    let m = common::mount_default(&layer);
    let fetcher = fetch_everything(&m);
    assert_eq!(fetcher.stats().failures, 0);
    assert_eq!(
        m.metrics.snapshot().background_span_fetch_count as u32,
        m.spans.span_count()
    );
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            m.path()
                .join(".soci-snapshotter")
                .join(format!("{}.json", layer.digest)),
        )
        .expect("state"),
    )
    .expect("json");
    assert_eq!(state["fetchedPercent"], 100);
    fetcher.stop();
    let reads = m.source.reads();
    assert_eq!(
        common::read(m.path().join("big.bin")).expect("big"),
        common::big_content()
    );
    assert_eq!(
        common::read(m.path().join("bin/tool")).expect("tool"),
        b"#!/bin/sh\necho tool\n"
    );
    assert_eq!(m.source.reads(), reads, "everything was local");
    let pt = m.metrics.snapshot().passthrough_opens;
    if pt == 0 {
        println!("NOTE: kernel did not accept FUSE passthrough; reads went through the daemon");
    } else {
        // A second open of the same file shares the backing file.
        assert_eq!(
            common::read(m.path().join("big.bin")).expect("again"),
            common::big_content()
        );
        assert!(m.metrics.snapshot().passthrough_opens > pt);
    }
}

/// Regression (e2e-more shared-layers scenario): concurrent first opens of a file whose spans
/// are all local raced on the passthrough decision; the kernel failed one open with EIO when
/// two opens of one inode got different backing files or modes.
#[test]
fn r_concurrent_opens_of_a_local_file_all_succeed() {
    skip_without_fuse!();
    let layer = common::fixture_layer();
    let m = common::mount_default(&layer);
    let fetcher = fetch_everything(&m);
    fetcher.stop();
    let big = m.path().join("big.bin");
    for round in 0..5 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (path, barrier) = (big.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // Keep every handle open until all threads have opened theirs.
                    let f = std::fs::File::open(&path);
                    barrier.wait();
                    let mut data = Vec::new();
                    f.and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut data))
                        .map(|_| data)
                })
            })
            .collect();
        for h in handles {
            let data = h
                .join()
                .expect("thread")
                .unwrap_or_else(|e| panic!("round {round}: concurrent open/read failed: {e}"));
            assert_eq!(data, common::big_content(), "round {round}");
        }
    }
}

#[test]
fn prefetch_spans_at_mount() {
    skip_without_fuse!();
    let layer = common::fixture_layer();
    let mut mo = MountOptions::default();
    mo.prefetch_spans = vec![(2, 3), (5, 5)];
    let m = common::mount_layer(&layer, SpanOptions::default(), FsOptions::default(), mo);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ![2, 3, 5]
        .iter()
        .all(|id| m.spans.state(*id) == SpanState::Uncompressed)
    {
        assert!(Instant::now() < deadline, "prefetch did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(m.metrics.snapshot().prefetch_span_fetches, 3);
    assert_eq!(m.spans.state(4), SpanState::Unrequested);
    assert!(m.spans.prefetch(&[(1, 999)]).is_err());
}

/// Records every operation and FUSE failure reported to it.
#[derive(Default)]
struct Recorder(
    parking_lot::Mutex<Vec<(Operation, Duration)>>,
    std::sync::atomic::AtomicUsize,
);

impl Observer for Recorder {
    fn observe(&self, op: Operation, elapsed: Duration) {
        self.0.lock().push((op, elapsed));
    }

    fn fuse_failure(&self) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Recorder {
    fn count(&self, op: Operation) -> usize {
        self.0.lock().iter().filter(|(o, _)| *o == op).count()
    }
}

#[test]
fn observer_gets_durations_and_fuse_failures() {
    skip_without_fuse!();
    let layer = common::fixture_layer();
    let rec = Arc::new(Recorder::default());
    let m = common::mount_layer_with(
        &layer,
        Metrics::with_observer(rec.clone()),
        SpanOptions::default(),
        FsOptions::default(),
        MountOptions::default(),
    );
    assert_eq!(rec.count(Operation::SynchronousRead), 0);
    assert_eq!(
        common::read(m.path().join("bin/tool")).expect("tool"),
        b"#!/bin/sh\necho tool\n"
    );
    let reads = rec.count(Operation::SynchronousRead);
    assert!(reads >= 1, "no synchronous_read observed");
    assert_eq!(reads as u64, m.metrics.snapshot().synchronous_read_count);
    let names: Vec<_> = std::fs::read_dir(m.path().join("bin"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(names.iter().any(|n| n == "tool"));
    assert!(
        rec.count(Operation::NodeReaddir) >= 1,
        "no node_readdir observed"
    );
    // Per-operation counts (the snapshotter's per-image FUSE operation counts).
    let s = m.metrics.snapshot();
    assert!(s.node_lookup_count >= 2, "bin, tool: {s:?}");
    assert!(s.node_open_count >= 1 && s.file_read_count >= 1, "{s:?}");
    assert!(s.node_readdir_count >= 1, "{s:?}");
    assert_eq!(s.whiteout_getattr_count, 0);
    assert_eq!(rec.count(Operation::BackgroundFetch), 0);
    // A failed read is counted and reported to the observer.
    assert_eq!(rec.1.load(std::sync::atomic::Ordering::SeqCst), 0);
    m.source.set_sticky(Some(Fault::Error));
    let err = common::read(m.path().join("big.bin")).expect_err("source fails");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    m.source.set_sticky(None);
    let failures = m.metrics.snapshot().fuse_read_failures;
    assert!(failures >= 1);
    assert_eq!(
        rec.1.load(std::sync::atomic::Ordering::SeqCst) as u64,
        failures
    );
    let fetcher = fetch_everything(&m);
    // The fetcher records the layer when it finds no span left to fetch.
    let deadline = Instant::now() + Duration::from_secs(20);
    while rec.count(Operation::BackgroundFetch) == 0 {
        assert!(Instant::now() < deadline, "no background_fetch observed");
        std::thread::sleep(Duration::from_millis(20));
    }
    fetcher.stop();
    assert_eq!(rec.count(Operation::BackgroundFetch), 1);
}

/// Counts, per layer, the prefetch reads in flight and the most layers seen prefetching at once.
#[derive(Default)]
struct Overlap {
    inflight: [usize; 2],
    max_layers: usize,
    done: [usize; 2],
}

struct Tracked {
    inner: FileSource,
    layer: usize,
    state: Arc<(parking_lot::Mutex<Overlap>, parking_lot::Condvar)>,
    /// Layer 0's reads wait (up to 10 s) until layer 1 has a read in flight.
    gate: bool,
}

impl BlobSource for Tracked {
    fn read_at(
        &self,
        range: std::ops::Range<u64>,
        kind: RequestKind,
    ) -> Result<Vec<u8>, SourceError> {
        if kind != RequestKind::Prefetch {
            return self.inner.read_at(range, kind);
        }
        let (lock, cv) = &*self.state;
        {
            let mut s = lock.lock();
            s.inflight[self.layer] += 1;
            let active = s.inflight.iter().filter(|n| **n > 0).count();
            s.max_layers = s.max_layers.max(active);
            cv.notify_all();
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.gate && self.layer == 0 && s.inflight[1] == 0 && s.done[1] == 0 {
                if cv.wait_until(&mut s, deadline).timed_out() {
                    break;
                }
            }
        }
        // Keep the read in flight for a moment so that overlaps would show.
        std::thread::sleep(Duration::from_millis(5));
        let r = self.inner.read_at(range, kind);
        let mut s = lock.lock();
        s.inflight[self.layer] -= 1;
        s.done[self.layer] += 1;
        cv.notify_all();
        r
    }
}

/// Prefetches every span of two layers at once; returns the most layers seen prefetching
/// together.
fn prefetch_two_layers(limit: Option<Arc<ConcurrencyLimit>>, gate: bool) -> usize {
    let layer = common::fixture_layer();
    let state = Arc::new((
        parking_lot::Mutex::new(Overlap::default()),
        parking_lot::Condvar::new(),
    ));
    let caches: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("cache"))
        .collect();
    let managers: Vec<_> = (0..2)
        .map(|i| {
            let src = Tracked {
                inner: FileSource::open(&layer.blob_path).expect("blob"),
                layer: i,
                state: state.clone(),
                gate,
            };
            SpanManager::new(
                &layer.ztoc,
                Arc::new(src),
                caches[i].path(),
                SpanOptions::default(),
                Arc::new(Metrics::default()),
            )
            .expect("span manager")
        })
        .collect();
    let last = managers[0].span_count() - 1;
    let handles: Vec<_> = managers
        .iter()
        .map(|m| {
            m.prefetch_limited(&[(0, last)], limit.clone())
                .expect("prefetch")
        })
        .collect();
    for h in handles {
        h.wait();
    }
    for m in &managers {
        assert_eq!(
            m.metrics().snapshot().prefetch_span_fetches,
            u64::from(m.span_count())
        );
        assert!((0..m.span_count()).all(|id| m.state(id) == SpanState::Uncompressed));
    }
    if let Some(l) = &limit {
        assert_eq!(l.in_use(), 0, "permits not given back");
    }
    let max = state.0.lock().max_layers;
    max
}

#[test]
fn prefetch_limit_bounds_layers_prefetching_at_once() {
    // `[prefetch].max_concurrency = 1`: the second layer starts only after the first is done.
    assert_eq!(
        prefetch_two_layers(Some(Arc::new(ConcurrencyLimit::new(1))), false),
        1
    );
    // 0 (unlimited) and no limit: both layers prefetch together (layer 0 waits for layer 1).
    assert_eq!(
        prefetch_two_layers(Some(Arc::new(ConcurrencyLimit::new(0))), true),
        2
    );
    assert_eq!(prefetch_two_layers(None, true), 2);
}

#[test]
fn tampered_metadata_fails_header_verification() {
    skip_without_fuse!();
    let mut layer = common::fixture_layer();
    let i = layer
        .ztoc
        .toc
        .iter()
        .position(|e| e.name == b"etc/hosts")
        .expect("hosts");
    layer.ztoc.toc[i].uid = 4242;
    let m = common::mount_default(&layer);
    let err = common::read(m.path().join("etc/hosts")).expect_err("tampered");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let state = std::fs::read_to_string(
        m.path()
            .join(".soci-snapshotter")
            .join(format!("{}.json", layer.digest)),
    )
    .expect("state");
    assert!(
        state.contains("file attributes do not match tar header"),
        "{state}"
    );
    // Untampered files still read.
    assert_eq!(
        common::read(m.path().join("opq/kept")).expect("kept"),
        b"kept\n"
    );
    drop(m);
    let mut fs_opts = FsOptions::default();
    fs_opts.disable_verification = true;
    let m = common::mount_layer(
        &layer,
        SpanOptions::default(),
        fs_opts,
        MountOptions::default(),
    );
    assert_eq!(
        common::read(m.path().join("etc/hosts")).expect("unverified"),
        b"127.0.0.1 localhost\n"
    );
}
