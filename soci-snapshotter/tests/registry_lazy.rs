//! A lazy layer served from a real registry: Debian's `docker-registry` (distribution 2.8) on a
//! free loopback port, read over FUSE through the snapshotter's registry `BlobSource`
//! ([`RegistryBlob`]).
//!
//! Reading one small file must fetch exactly the gzip header and the spans holding that file's
//! tar header and content: counted both by a wrapper around the `BlobSource` and, independently,
//! from the registry's access log (`"GET /v2/<repo>/blobs/<digest> HTTP/1.1" 206 <bytes>`). Then
//! the background fetcher must complete the layer (progress file at 100 %) with one request per
//! remaining span, and every file must read back exactly.
//!
//! A third test runs the `[resolver]` mirror fetcher (`remote::fetcher::LayerFetcher`) over two
//! registries: reads go to the mirror, then fail over to the primary when the mirror is killed.
//!
//! Needs root, /dev/fuse and `docker-registry` (`apt-get install docker-registry`); otherwise
//! prints `SKIPPED: <reason>`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use soci_fs::{
    BackgroundFetchOptions, BackgroundFetcher, BlobSource, FsOptions, LayerFs, Metrics,
    MountHandle, MountOptions, RequestKind, SourceError, SpanManager, SpanOptions, Tree,
};
use soci_registry::{Client, Digest, PlainHttp, PushBlobOptions, Reference};
use soci_snapshotter::remote::soci::RegistryBlob;
use soci_ztoc::{SpanId, UncompressedOffset, ZtocBuilder};

const SPAN: u64 = 64 * 1024;
const REPO: &str = "soci-fs/lazy";
const TARGET: &str = "etc/target.conf";
/// Ports other sessions and the e2e scripts use.
const RESERVED_PORTS: [u16; 6] = [5000, 5001, 5100, 5101, 5200, 5201];

/// Deterministic poorly compressible bytes (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The layer's files: big noise files around one small text file, so the layer has many spans
/// and the small file sits in the middle of them.
fn files() -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        ("bin/tool-a".to_owned(), noise(700 * 1024, 1)),
        ("data/blob-1".to_owned(), noise(333 * 1024 + 17, 2)),
        (
            TARGET.to_owned(),
            (0..3000).map(|i| b"key = value;\n"[i % 13]).collect(),
        ),
        ("data/blob-2".to_owned(), noise(520 * 1024 + 5, 3)),
        (
            "usr/share/doc/readme".to_owned(),
            b"lazy loading\n".to_vec(),
        ),
    ];
    let mut text = Vec::new();
    for i in 0..20_000 {
        writeln!(text, "line {i}: the quick brown fox").expect("vec write");
    }
    v.push(("usr/share/doc/long.txt".to_owned(), text));
    v.push(("lib/tool-b".to_owned(), noise(400 * 1024, 4)));
    v
}

fn build_tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, name, &data[..]).expect("tar append");
    }
    b.into_inner().expect("tar finish")
}

/// `[header start, content end)` of `name` in the tar stream.
fn entry_range(tar: &[u8], name: &str) -> Range<u64> {
    let mut a = tar::Archive::new(tar);
    for e in a.entries().expect("tar entries") {
        let e = e.expect("tar entry");
        if e.path().expect("path").to_str() == Some(name) {
            return e.raw_header_position()..e.raw_file_position() + e.size();
        }
    }
    panic!("{name} not in the tar");
}

/// docker-registry on a free loopback port; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, String> {
    for _ in 0..20 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())?;
        if !RESERVED_PORTS.contains(&port) {
            return Ok(port);
        }
    }
    Err("no free port".into())
}

fn start_registry() -> Result<Registry, String> {
    let bin = find_binary("docker-registry")
        .ok_or("docker-registry not installed (apt-get install docker-registry)")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port()?;
    let cfg = dir.path().join("config.yml");
    // `log.level: info` keeps the access log (one combined-log line per request, status and
    // bytes written) next to the "response completed" lines.
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
            dir.path().join("data").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let log = dir.path().join("registry.log");
    let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .arg("serve")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start docker-registry: {e}"))?;
    let mut reg = Registry {
        child,
        port,
        log,
        _dir: dir,
    };
    for _ in 0..200 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            if out.starts_with(b"HTTP/1.1 200") {
                return Ok(reg);
            }
        }
        if let Ok(Some(status)) = reg.child.try_wait() {
            let log = std::fs::read_to_string(&reg.log).unwrap_or_default();
            return Err(format!("docker-registry exited ({status}): {log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("docker-registry not ready after 10 s".into())
}

/// `(count, bytes)` of ranged blob GETs (status 206) of `digest` in the registry's access log.
fn logged_range_gets(log: &Path, digest: &Digest) -> (usize, u64) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let needle = format!("\"GET /v2/{REPO}/blobs/{digest} HTTP/1.1\" 206 ");
    text.lines()
        .filter_map(|l| l.split_once(&needle))
        .map(|(_, rest)| {
            rest.split(' ')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .expect("bytes written in access log line")
        })
        .fold((0, 0), |(n, b), w| (n + 1, b + w))
}

/// Waits until the access log shows `want` ranged GETs (lines are written after the response),
/// then a little longer to catch any extra ones.
fn settled_range_gets(log: &Path, digest: &Digest, want: usize) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while logged_range_gets(log, digest).0 < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    logged_range_gets(log, digest)
}

/// A `BlobSource` that records every range it is asked for.
struct Counting {
    inner: RegistryBlob,
    reads: Mutex<Vec<(Range<u64>, RequestKind)>>,
}

impl Counting {
    fn reads(&self) -> Vec<(Range<u64>, RequestKind)> {
        self.reads.lock().expect("lock").clone()
    }
}

impl BlobSource for Counting {
    fn read_at(&self, range: Range<u64>, kind: RequestKind) -> Result<Vec<u8>, SourceError> {
        self.reads.lock().expect("lock").push((range.clone(), kind));
        self.inner.read_at(range, kind)
    }
}

fn fuse_unavailable() -> Option<String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => None,
        Err(e) => Some(format!(
            "cannot open /dev/fuse read-write (need root and FUSE): {e}"
        )),
    }
}

/// Unmounts on drop, also while unwinding from a failed assertion.
struct Mounted(Option<MountHandle>, PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            if h.unmount().is_err() {
                let _ = Command::new("umount").arg("-l").arg(&self.1).status();
            }
        }
    }
}

/// The registry for a test, or `None` after printing why the test is SKIPPED.
fn registry_or_skip() -> Option<Registry> {
    if let Some(reason) = fuse_unavailable() {
        println!("SKIPPED: {reason}");
        return None;
    }
    match start_registry() {
        Ok(r) => Some(r),
        Err(reason) => {
            println!("SKIPPED: {reason}");
            None
        }
    }
}

/// The files as a tar, that tar gzip'd (the layer blob), and its zTOC with `SPAN`-sized spans.
fn gzip_layer(files: &[(String, Vec<u8>)]) -> (Vec<u8>, Vec<u8>, soci_ztoc::Ztoc) {
    let tar = build_tar(files);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip");
    let blob = gz.finish().expect("gzip");
    let ztoc = ZtocBuilder::new()
        .span_size(SPAN)
        .build(&blob[..])
        .expect("ztoc");
    (tar, blob, ztoc)
}

fn progress(mnt: &Path, digest: &Digest) -> serde_json::Value {
    let p = mnt.join(format!(".soci-snapshotter/{digest}.json"));
    serde_json::from_slice(&std::fs::read(&p).expect("progress file")).expect("progress json")
}

#[test]
fn registry_lazy_layer_fetches_only_touched_spans_then_completes() {
    let Some(reg) = registry_or_skip() else {
        return;
    };

    // -- the layer: tar → gzip → zTOC with 64 KiB spans
    let files = files();
    let (tar, blob, ztoc) = gzip_layer(&files);
    let zinfo = ztoc.zinfo().expect("zinfo");
    let span_count = zinfo.span_count();
    assert!(
        span_count >= 20,
        "want a multi-span layer, got {span_count}"
    );

    // -- push it; the reads below run on this runtime from FUSE / fetcher threads
    let (rt, client) = (runtime(), client());
    let host = format!("127.0.0.1:{}", reg.port);
    let digest = Digest::sha256_of(&blob);
    let reference = Reference::with_digest(&host, REPO, &digest).expect("reference");
    let pushed = rt
        .block_on(client.push_blob(
            &reference,
            Bytes::from(blob.clone()),
            &PushBlobOptions::new(),
        ))
        .expect("push layer");
    assert_eq!(pushed.digest, digest);
    assert_eq!(logged_range_gets(&reg.log, &digest), (0, 0));

    // -- mount through the registry BlobSource
    let source = Arc::new(Counting {
        inner: RegistryBlob::new(
            rt.handle().clone(),
            client,
            reference.clone(),
            digest.clone(),
        ),
        reads: Mutex::new(Vec::new()),
    });
    let cache = tempfile::tempdir().expect("cache dir");
    let mnt = tempfile::tempdir().expect("mountpoint");
    let metrics = Arc::new(Metrics::default());
    let spans = SpanManager::new(
        &ztoc,
        source.clone() as Arc<dyn BlobSource>,
        cache.path(),
        SpanOptions::default(),
        metrics.clone(),
    )
    .expect("span manager");
    let tree = Tree::from_ztoc(&ztoc).expect("tree");
    let fs = LayerFs::new(
        tree,
        spans.clone(),
        digest.to_string(),
        FsOptions::default(),
    );
    let mut mounted = Mounted(
        Some(soci_fs::mount(fs, mnt.path(), &MountOptions::default()).expect("mount")),
        mnt.path().to_owned(),
    );
    // Mounting reads only the gzip header (the bytes before span 0).
    let header = zinfo.header_range();
    assert_eq!(
        source
            .reads()
            .into_iter()
            .map(|(r, _)| r)
            .collect::<Vec<_>>(),
        vec![header.clone()]
    );

    // -- read one small file: exactly the spans holding its tar header and content
    let t0 = Instant::now();
    let got = std::fs::read(mnt.path().join(TARGET)).expect("read target");
    let read_time = t0.elapsed();
    let want_content = &files.iter().find(|(n, _)| n == TARGET).expect("target").1;
    assert_eq!(&got, want_content);
    let entry = entry_range(&tar, TARGET);
    let first = zinfo.span_of(UncompressedOffset(entry.start)).0;
    let last = zinfo.span_of(UncompressedOffset(entry.end - 1)).0;
    let mut want: Vec<Range<u64>> = vec![header.clone()];
    want.extend((first..=last).map(|id| zinfo.span(SpanId(id)).expect("span").compressed));
    let want_bytes: u64 = want.iter().map(|r| r.end - r.start).sum();
    let mut seen: Vec<Range<u64>> = source.reads().into_iter().map(|(r, _)| r).collect();
    seen.sort_by_key(|r| (r.start, r.end));
    assert_eq!(seen, want, "BlobSource reads for one file");
    let (log_n, log_bytes) = settled_range_gets(&reg.log, &digest, want.len());
    assert_eq!(
        (log_n, log_bytes),
        (want.len(), want_bytes),
        "ranged GETs in the registry access log for one file"
    );
    let p = progress(mnt.path(), &digest);
    assert_eq!(p["size"], serde_json::json!(blob.len()));
    assert!(
        p["fetchedPercent"].as_f64().expect("fetchedPercent") < 100.0,
        "{p}"
    );
    println!(
        "one file ({} bytes, spans {first}..={last} of {span_count}): {} range requests (gzip header + {} spans), {want_bytes} of {} compressed bytes, {read_time:?}; registry log: {log_n} requests, {log_bytes} bytes",
        got.len(),
        want.len(),
        last - first + 1,
        blob.len()
    );

    // -- a multi-span file: its spans are added, nothing else (read-ahead stays inside the file)
    let long = "usr/share/doc/long.txt";
    let got = std::fs::read(mnt.path().join(long)).expect("read long file");
    assert!(got == files.iter().find(|(n, _)| n == long).expect("long").1);
    let entry = entry_range(&tar, long);
    let (lfirst, llast) = (
        zinfo.span_of(UncompressedOffset(entry.start)).0,
        zinfo.span_of(UncompressedOffset(entry.end - 1)).0,
    );
    assert!(llast > lfirst, "{long} should cross span boundaries");
    for id in lfirst..=llast {
        let r = zinfo.span(SpanId(id)).expect("span").compressed;
        if !want.contains(&r) {
            want.push(r);
        }
    }
    want.sort_by_key(|r| (r.start, r.end));
    let mut seen: Vec<Range<u64>> = source.reads().into_iter().map(|(r, _)| r).collect();
    seen.sort_by_key(|r| (r.start, r.end));
    assert_eq!(seen, want, "BlobSource reads after a multi-span file");
    let want_bytes: u64 = want.iter().map(|r| r.end - r.start).sum();
    let (log_n, log_bytes) = settled_range_gets(&reg.log, &digest, want.len());
    assert_eq!((log_n, log_bytes), (want.len(), want_bytes));
    println!(
        "then {long} ({} bytes, spans {lfirst}..={llast}): {} range requests, {want_bytes} bytes in all so far; registry log: {log_n} requests, {log_bytes} bytes",
        got.len(),
        want.len()
    );
    let demand = want.len() - 1;

    // -- the background fetcher completes the layer, one request per remaining span
    let t1 = Instant::now();
    let fetcher = BackgroundFetcher::new(BackgroundFetchOptions::default());
    assert!(fetcher.add_layer(&spans));
    let deadline = Instant::now() + Duration::from_secs(120);
    while spans.fetched_size() < spans.blob_size() {
        assert!(
            Instant::now() < deadline,
            "background fetch stuck at {} of {} bytes",
            spans.fetched_size(),
            spans.blob_size()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let bg_time = t1.elapsed();
    let p = progress(mnt.path(), &digest);
    assert_eq!(p["fetchedPercent"].as_f64(), Some(100.0), "{p}");
    assert_eq!(p["fetchedSize"], serde_json::json!(blob.len()), "{p}");
    let stats = fetcher.stats();
    fetcher.stop();

    // Every span exactly once, plus the gzip header; nothing fetched twice.
    let reads = source.reads();
    let mut all: Vec<Range<u64>> = reads.iter().map(|(r, _)| r.clone()).collect();
    all.sort_by_key(|r| (r.start, r.end));
    let mut want_all = vec![header.clone()];
    want_all
        .extend((0..span_count as u32).map(|id| zinfo.span(SpanId(id)).expect("span").compressed));
    assert_eq!(all, want_all, "BlobSource reads for the whole layer");
    let background = reads
        .iter()
        .filter(|(_, k)| *k == RequestKind::Background)
        .count();
    assert_eq!(background, span_count as usize - demand);
    let total_bytes: u64 = all.iter().map(|r| r.end - r.start).sum();
    let (log_n, log_bytes) = settled_range_gets(&reg.log, &digest, want_all.len());
    assert_eq!((log_n, log_bytes), (want_all.len(), total_bytes));
    println!(
        "background fetch: {background} more spans in {bg_time:?} ({stats:?}); layer total {} range requests, {total_bytes} bytes for a {} byte blob; registry log: {log_n} requests, {log_bytes} bytes",
        all.len(),
        blob.len()
    );

    // -- every file reads back exactly, without another request
    let expected: BTreeMap<&str, &[u8]> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    for (name, data) in &expected {
        let got = std::fs::read(mnt.path().join(name)).expect("read file");
        assert!(got == *data, "{name} differs");
    }
    assert_eq!(
        source.reads().len(),
        want_all.len(),
        "reads after completion"
    );
    let m = metrics.snapshot();
    assert_eq!(
        m.source_errors + m.digest_mismatches + m.timeouts,
        0,
        "{m:?}"
    );

    mounted
        .0
        .take()
        .expect("mounted")
        .unmount()
        .expect("unmount");
    drop(rt);
}

/// A layer's prefetch artifact (spec §4.4, §5.10): its span ranges, decoded with the
/// snapshotter's `prefetch_spans`, are fetched right after mount without any file being read; a
/// corrupt artifact yields no spans and the layer still mounts and reads.
#[test]
fn registry_lazy_layer_prefetch_artifact_spans_fetched_at_mount() {
    use soci_index::{PrefetchArtifact, PrefetchSpan};
    use soci_snapshotter::remote::soci::prefetch_spans;

    let Some(reg) = registry_or_skip() else {
        return;
    };

    let files = files();
    let (_tar, blob, ztoc) = gzip_layer(&files);
    let zinfo = ztoc.zinfo().expect("zinfo");
    assert!(zinfo.span_count() >= 10, "want a multi-span layer");

    let (rt, client) = (runtime(), client());
    let host = format!("127.0.0.1:{}", reg.port);
    let digest = Digest::sha256_of(&blob);
    let reference = Reference::with_digest(&host, REPO, &digest).expect("reference");
    rt.block_on(client.push_blob(
        &reference,
        Bytes::from(blob.clone()),
        &PushBlobOptions::new(),
    ))
    .expect("push layer");

    let mount_with = |spans: Vec<(u32, u32)>| {
        let source = Arc::new(Counting {
            inner: RegistryBlob::new(
                rt.handle().clone(),
                client.clone(),
                reference.clone(),
                digest.clone(),
            ),
            reads: Mutex::new(Vec::new()),
        });
        let cache = tempfile::tempdir().expect("cache dir");
        let mnt = tempfile::tempdir().expect("mountpoint");
        let sm = SpanManager::new(
            &ztoc,
            source.clone() as Arc<dyn BlobSource>,
            cache.path(),
            SpanOptions::default(),
            Arc::new(Metrics::default()),
        )
        .expect("span manager");
        let fs = LayerFs::new(
            Tree::from_ztoc(&ztoc).expect("tree"),
            sm,
            digest.to_string(),
            FsOptions::default(),
        );
        let mut opts = MountOptions::default();
        opts.prefetch_spans = spans;
        let mounted = Mounted(
            Some(soci_fs::mount(fs, mnt.path(), &opts).expect("mount")),
            mnt.path().to_owned(),
        );
        (source, mounted, mnt, cache)
    };

    // -- a valid artifact: spans 3..=5 and 9 are fetched at mount, nothing is read
    let artifact =
        PrefetchArtifact::new(vec![PrefetchSpan::new(3, 5), PrefetchSpan::new(9, 9)]).to_json();
    let spans = prefetch_spans(Some(&artifact)).expect("valid artifact");
    assert_eq!(spans, vec![(3, 5), (9, 9)]);
    let (source, mounted, mnt, _cache) = mount_with(spans);
    let header = zinfo.header_range();
    let mut want: Vec<Range<u64>> = vec![header.clone()];
    want.extend(
        [3u32, 4, 5, 9]
            .iter()
            .map(|&id| zinfo.span(SpanId(id)).expect("span").compressed),
    );
    want.sort_by_key(|r| (r.start, r.end));
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let mut seen: Vec<Range<u64>> = source.reads().into_iter().map(|(r, _)| r).collect();
        seen.sort_by_key(|r| (r.start, r.end));
        if seen.len() >= want.len() || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        seen, want,
        "BlobSource reads after mount with a prefetch artifact"
    );
    assert!(
        source
            .reads()
            .iter()
            .filter(|(r, _)| *r != header)
            .all(|(_, k)| *k == RequestKind::Prefetch),
        "prefetched spans are read as prefetch: {:?}",
        source.reads()
    );
    // The mount still serves files correctly.
    let got = std::fs::read(mnt.path().join(TARGET)).expect("read target");
    assert_eq!(
        &got,
        &files.iter().find(|(n, _)| n == TARGET).expect("target").1
    );
    drop(mounted);

    // -- corrupt, wrong-version, empty, negative and missing artifacts give no spans
    assert!(prefetch_spans(Some(b"{not json")).is_err());
    assert!(prefetch_spans(Some(
        br#"{"version":"2.0","prefetch_spans":[{"start_span":1,"end_span":2}]}"#
    ))
    .is_err());
    assert!(prefetch_spans(Some(br#"{"version":"1.0","prefetch_spans":[]}"#)).is_err());
    assert!(prefetch_spans(Some(
        br#"{"version":"1.0","prefetch_spans":[{"start_span":-1,"end_span":2}]}"#
    ))
    .is_err());
    assert!(prefetch_spans(None).is_err());
    // ... and the layer mounts without prefetch: only the gzip header, then the file reads.
    let spans = prefetch_spans(Some(b"{not json")).unwrap_or_default();
    let (source, mounted, mnt, _cache) = mount_with(spans);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        source
            .reads()
            .into_iter()
            .map(|(r, _)| r)
            .collect::<Vec<_>>(),
        vec![header]
    );
    let got = std::fs::read(mnt.path().join(TARGET)).expect("read target");
    assert_eq!(
        &got,
        &files.iter().find(|(n, _)| n == TARGET).expect("target").1
    );
    drop(mounted);
}

/// `[resolver]` mirrors (spec §5.12) with two real registries: the layer fetcher reads from the
/// mirror first; when the mirror is gone, a failed read resolves the hosts again and the primary
/// serves it; with no host left, reads and checks fail instead of hanging.
#[test]
fn registry_mirror_fetcher_fails_over_to_the_primary() {
    use soci_snapshotter::config::Config;
    use soci_snapshotter::remote::fetcher::LayerFetcher;
    use soci_snapshotter::remote::hosts::{registry_hosts, ClientTuning, Hosts};

    let (primary, mirror) = match (start_registry(), start_registry()) {
        (Ok(p), Ok(m)) => (p, m),
        (Err(reason), _) | (_, Err(reason)) => {
            println!("SKIPPED: {reason}");
            return;
        }
    };
    let rt = runtime();
    let blob = Bytes::from(noise(300_000, 9));
    let digest = Digest::sha256_of(&blob);
    let image: Reference = format!("127.0.0.1:{}/{REPO}:v1", primary.port)
        .parse()
        .expect("reference");
    let pusher = Client::builder()
        .plain_http(PlainHttp::Loopback)
        .build()
        .expect("client");
    for port in [primary.port, mirror.port] {
        let r: Reference = format!("127.0.0.1:{port}/{REPO}:v1")
            .parse()
            .expect("reference");
        rt.block_on(pusher.push_blob(&r, blob.clone(), &PushBlobOptions::new()))
            .expect("push");
    }
    let (cfg, _) = Config::from_toml(&format!(
        "[[resolver.host.\"127.0.0.1:{p}\".mirrors]]\nhost = \"http://127.0.0.1:{m}\"\n",
        p = primary.port,
        m = mirror.port
    ))
    .expect("config");
    let list = registry_hosts(&cfg.resolver, image.registry());
    assert_eq!(list.len(), 2, "{list:?}");
    let tuning = ClientTuning {
        max_retries: 1,
        min_wait: Duration::from_millis(10),
        max_wait: Duration::from_millis(20),
        request_timeout: Duration::from_secs(10),
        dial_timeout: Duration::from_secs(2),
    };
    let hosts = Arc::new(Hosts::new(list, &tuning, &tuning).expect("hosts"));
    let mirror_url = format!("http://127.0.0.1:{}/v2", mirror.port);
    let primary_url = format!("http://127.0.0.1:{}/v2", primary.port);
    let f = LayerFetcher::new(
        rt.handle().clone(),
        hosts.clone(),
        image.clone(),
        digest.clone(),
        Duration::ZERO,
    );
    f.resolve().expect("resolve");
    assert_eq!(f.current_host(), mirror_url);
    let got = f
        .read_at(1000..5000, RequestKind::OnDemand)
        .expect("read from the mirror");
    assert_eq!(got, blob[1000..5000]);
    f.check().expect("mirror reachable");
    // Probe + read + check on the mirror, nothing on the primary.
    assert_eq!(settled_range_gets(&mirror.log, &digest, 3).0, 3);
    assert_eq!(logged_range_gets(&primary.log, &digest).0, 0);

    drop(mirror);
    let got = f
        .read_at(100_000..120_000, RequestKind::OnDemand)
        .expect("read after the mirror went down");
    assert_eq!(got, blob[100_000..120_000]);
    assert_eq!(f.current_host(), primary_url);
    // The primary answered the probe of the re-resolution and the repeated read.
    assert_eq!(settled_range_gets(&primary.log, &digest, 2).0, 2);
    f.check().expect("primary reachable");
    // A new fetcher skips the dead mirror at resolution.
    let g = LayerFetcher::new(
        rt.handle().clone(),
        hosts.clone(),
        image.clone(),
        digest.clone(),
        Duration::from_secs(3600),
    );
    g.resolve().expect("resolve with the mirror down");
    assert_eq!(g.current_host(), primary_url);

    drop(primary);
    let err = f
        .read_at(0..10, RequestKind::OnDemand)
        .expect_err("no host left");
    assert!(!err.to_string().is_empty());
    assert!(f.check().is_err());
    // Within valid_interval (1 h since the last success) the check does not touch the network.
    g.check().expect("check skipped within valid_interval");
    let h = LayerFetcher::new(rt.handle().clone(), hosts, image, digest, Duration::ZERO);
    let err = h.resolve().expect_err("no host serves the blob");
    assert!(
        err.starts_with("unable to create remote fetcher: ")
            && err.contains(&mirror_url)
            && err.contains(&primary_url),
        "{err}"
    );
}

/// The runtime the pushes and the FUSE/fetcher threads' registry reads run on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A plain-HTTP loopback client with short retry waits.
fn client() -> Client {
    Client::builder()
        .plain_http(PlainHttp::Loopback)
        .retry_wait(Duration::from_millis(5), Duration::from_millis(50))
        .build()
        .expect("client")
}
