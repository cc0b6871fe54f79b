//! The span manager of one layer (SPEC §5.7): span states, single-flight fetching with digest
//! verification, decompression through soci-ztoc, a memory and disk cache, read-ahead and
//! prefetch.

use std::collections::VecDeque;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use soci_ztoc::{sha256_digest, Compression, SpanId, UncompressedOffset, Zinfo, Ztoc};

use crate::cache::{Key, SpanCache};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::source::{BlobSource, RequestKind};

/// Tunables of a [`SpanManager`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SpanOptions {
    /// Byte budget of the on-disk cache of this layer; least recently used span files are
    /// evicted beyond it. 0 disables the disk cache (spans then live only in memory).
    /// By default 2 GiB.
    pub cache_budget: u64,
    /// Decompressed spans kept in memory (at least 1). By default 4.
    pub memory_spans: usize,
    /// How long a read waits for a span before failing with EIO. The fetch itself goes on
    /// and fills the cache for the next read. By default 60 s.
    pub fetch_timeout: Duration,
    /// Refetches after a digest mismatch (`[blob].max_span_verification_retries`). By default 0.
    pub max_span_verification_retries: u32,
    /// Start fetching the next span when a file is read sequentially. By default true.
    pub read_ahead: bool,
}

impl Default for SpanOptions {
    fn default() -> Self {
        Self {
            cache_budget: 2 << 30,
            memory_spans: 4,
            fetch_timeout: Duration::from_secs(60),
            max_span_verification_retries: 0,
            read_ahead: true,
        }
    }
}

/// Where a span is (SPEC §5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanState {
    /// Not local, no fetch running.
    Unrequested,
    /// A fetch is running.
    Requested,
    /// The verified compressed bytes are cached.
    Fetched,
    /// The decompressed bytes are cached.
    Uncompressed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Compressed or decompressed, either is fine (background fetch).
    Local,
    /// Decompressed (reads, prefetch).
    Uncompressed,
}

#[derive(Debug, Default)]
struct SlotState {
    inflight: bool,
    generation: u64,
    last_error: Option<Arc<Error>>,
}

#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct MemLru {
    cap: usize,
    spans: VecDeque<(u32, Arc<Vec<u8>>)>,
}

impl MemLru {
    fn get(&mut self, id: u32) -> Option<Arc<Vec<u8>>> {
        let i = self.spans.iter().position(|(s, _)| *s == id)?;
        let e = self.spans.remove(i)?;
        let data = e.1.clone();
        self.spans.push_back(e);
        Some(data)
    }

    fn contains(&self, id: u32) -> bool {
        self.spans.iter().any(|(s, _)| *s == id)
    }

    fn put(&mut self, id: u32, data: Arc<Vec<u8>>) {
        self.spans.retain(|(s, _)| *s != id);
        self.spans.push_back((id, data));
        while self.spans.len() > self.cap {
            self.spans.pop_front();
        }
    }
}

/// Fetches, verifies, decompresses and caches the spans of one layer.
///
/// Exactly one fetch per span runs at a time however many readers wait for it; waiters share
/// its result, and a failed fetch leaves the span unrequested so the next read tries again.
/// Fetches run on their own threads so a reader can give up after
/// [`SpanOptions::fetch_timeout`] without leaving the span half-fetched.
#[derive(Debug)]
pub struct SpanManager {
    me: Weak<SpanManager>,
    zinfo: Zinfo,
    source: Arc<dyn BlobSource>,
    cache: SpanCache,
    slots: Box<[Slot]>,
    mem: Mutex<MemLru>,
    metrics: Arc<Metrics>,
    opts: SpanOptions,
    fetched: Mutex<Vec<Range<u64>>>,
    closed: AtomicBool,
    foreground: AtomicUsize,
}

impl std::fmt::Debug for dyn BlobSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobSource")
    }
}

struct ForegroundGuard<'a>(&'a AtomicUsize);

impl Drop for ForegroundGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SpanManager {
    /// Checks the zTOC's spans (SPEC §5.7 construction), reads and checks the gzip header
    /// bytes before span 0, and creates an empty cache directory under `cache_parent`.
    pub fn new(
        ztoc: &Ztoc,
        source: Arc<dyn BlobSource>,
        cache_parent: &Path,
        opts: SpanOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>> {
        let zinfo = Zinfo::from_ztoc(ztoc)?;
        let header = zinfo.header_range();
        let fetched = if header.is_empty() {
            Vec::new()
        } else {
            let bytes = source
                .read_exact_at(header.clone(), RequestKind::OnDemand)
                .map_err(|source| Error::Source {
                    span: u32::MAX,
                    source,
                })?;
            zinfo.verify_header(&bytes)?;
            metrics.add(|m| &m.bytes_fetched, bytes.len() as u64);
            vec![header]
        };
        let cache = SpanCache::create(cache_parent, opts.cache_budget, metrics.clone())?;
        let slots = (0..zinfo.span_count()).map(|_| Slot::default()).collect();
        let mem = MemLru {
            cap: opts.memory_spans.max(1),
            spans: VecDeque::new(),
        };
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            zinfo,
            source,
            cache,
            slots,
            mem: Mutex::new(mem),
            metrics,
            opts,
            fetched: Mutex::new(fetched),
            closed: AtomicBool::new(false),
            foreground: AtomicUsize::new(0),
        }))
    }

    /// Span geometry and checkpoints.
    pub fn zinfo(&self) -> &Zinfo {
        &self.zinfo
    }

    /// The counters this manager updates.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Number of spans.
    pub fn span_count(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Size of the compressed blob.
    pub fn blob_size(&self) -> u64 {
        self.zinfo.blob_size()
    }

    /// Size of the union of blob byte ranges fetched so far, including the header read.
    pub fn fetched_size(&self) -> u64 {
        self.fetched.lock().iter().map(|r| r.end - r.start).sum()
    }

    /// Bytes in the on-disk cache.
    pub fn cache_size(&self) -> u64 {
        self.cache.size()
    }

    /// Whether a reader is currently waiting on this layer (the background fetcher yields).
    pub fn foreground_busy(&self) -> bool {
        self.foreground.load(Ordering::Relaxed) > 0
    }

    /// Stops the manager: waiting readers fail at once, new fetches are refused.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for s in self.slots.iter() {
            let _g = s.state.lock();
            s.done.notify_all();
        }
    }

    /// Whether [`SpanManager::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The state of one span.
    pub fn state(&self, id: u32) -> SpanState {
        let Some(slot) = self.slots.get(id as usize) else {
            return SpanState::Unrequested;
        };
        let st = slot.state.lock();
        if st.inflight {
            SpanState::Requested
        } else if self.has(id, Want::Uncompressed) {
            SpanState::Uncompressed
        } else if self.cache.contains(Key::Compressed(id)) {
            SpanState::Fetched
        } else {
            SpanState::Unrequested
        }
    }

    /// Whether every span holding uncompressed bytes `range` is fetched or decompressed.
    pub fn is_local(&self, range: Range<u64>) -> bool {
        if range.is_empty() {
            return true;
        }
        let (first, last) = self.span_bounds(range);
        (first..=last).all(|id| self.has(id, Want::Local))
    }

    fn span_bounds(&self, range: Range<u64>) -> (u32, u32) {
        let first = self.zinfo.span_of(UncompressedOffset(range.start)).0;
        let last = self
            .zinfo
            .span_of(UncompressedOffset(
                range.end.saturating_sub(1).max(range.start),
            ))
            .0;
        (first, last)
    }

    fn has(&self, id: u32, want: Want) -> bool {
        if self.mem.lock().contains(id) || self.cache.contains(Key::Uncompressed(id)) {
            return true;
        }
        want == Want::Local && self.cache.contains(Key::Compressed(id))
    }

    /// Reads `len` bytes of the uncompressed tar stream at `offset` (clamped to its end),
    /// fetching the spans that hold them.
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len as u64).min(self.zinfo.tar_size());
        if offset >= end {
            return Ok(Vec::new());
        }
        let (first, last) = self.span_bounds(offset..end);
        // Start every missing span first so a multi-span read fetches them in parallel.
        for id in first..=last {
            if self.has(id, Want::Uncompressed) {
                self.metrics.add(|m| &m.cache_hits, 1);
            } else {
                self.metrics.add(|m| &m.cache_misses, 1);
                self.kick(id, RequestKind::OnDemand);
            }
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for id in first..=last {
            let span = self.span(id)?;
            let r = offset.max(span.uncompressed.start)..end.min(span.uncompressed.end);
            let mut tries = 0;
            loop {
                self.ensure(id, Want::Uncompressed, RequestKind::OnDemand)?;
                if let Some(bytes) = self.copy(id, &span.uncompressed, r.clone()) {
                    out.extend_from_slice(&bytes);
                    break;
                }
                tries += 1;
                if tries >= 3 {
                    return Err(Error::Evicted { span: id });
                }
            }
        }
        Ok(out)
    }

    /// Starts fetching the span after the one holding `offset` if it starts before `limit`
    /// and is not local yet. Never blocks.
    pub fn read_ahead(&self, offset: u64, limit: u64) {
        if !self.opts.read_ahead {
            return;
        }
        let next = self.zinfo.span_of(UncompressedOffset(offset)).0 + 1;
        if let Some(span) = self.zinfo.span(SpanId(next)) {
            if span.uncompressed.start < limit && !self.has(next, Want::Uncompressed) {
                self.kick(next, RequestKind::Prefetch);
            }
        }
    }

    /// Makes one span local for the background fetcher: compressed bytes are cached as they
    /// are (state `fetched`), decompression waits until a read needs them.
    pub fn fetch_background(&self, id: u32) -> Result<()> {
        self.ensure(id, Want::Local, RequestKind::Background)
    }

    /// Makes one span `uncompressed` (prefetch).
    pub fn fetch_uncompressed(&self, id: u32, kind: RequestKind) -> Result<()> {
        self.ensure(id, Want::Uncompressed, kind)
    }

    /// Fetches the spans of `ranges` (inclusive `(start_span, end_span)` pairs, the prefetch
    /// artifact's `prefetch_spans`) into the decompressed cache, in order, with up to
    /// `available_parallelism` threads. Returns at once; join the handle to wait.
    pub fn prefetch(&self, ranges: &[(u32, u32)]) -> Result<PrefetchHandle> {
        self.prefetch_limited(ranges, None)
    }

    /// [`SpanManager::prefetch`], but the prefetch waits for a permit of `limit` (when given)
    /// before fetching anything and holds it until every span was attempted, so that at most
    /// `limit`'s number of layers prefetch at once (`[prefetch].max_concurrency`, spec §5.10).
    /// Returns at once; invalid ranges are reported before any waiting.
    pub fn prefetch_limited(
        &self,
        ranges: &[(u32, u32)],
        limit: Option<Arc<ConcurrencyLimit>>,
    ) -> Result<PrefetchHandle> {
        let max = self.span_count().saturating_sub(1);
        let mut ids = Vec::new();
        for &(start, end) in ranges {
            if start > end || end > max {
                return Err(Error::InvalidPrefetchRange { start, end, max });
            }
            ids.extend(start..=end);
        }
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(*id));
        let me = self.me.clone();
        let t = std::thread::Builder::new()
            .name("soci-prefetch".into())
            .spawn(move || {
                let _permit = limit.as_ref().map(|l| l.acquire());
                run_prefetch(&me, ids);
            })
            .map_err(Error::io("spawning a prefetch thread"))?;
        Ok(PrefetchHandle { threads: vec![t] })
    }

    fn span(&self, id: u32) -> Result<soci_ztoc::Span> {
        self.zinfo
            .span(SpanId(id))
            .ok_or(Error::Ztoc(soci_ztoc::Error::Inconsistent {
                reason: "span id out of range",
            }))
    }

    fn copy(&self, id: u32, span: &Range<u64>, r: Range<u64>) -> Option<Vec<u8>> {
        let (a, b) = (
            (r.start - span.start) as usize,
            (r.end - span.start) as usize,
        );
        if let Some(data) = self.mem.lock().get(id) {
            return data.get(a..b).map(<[u8]>::to_vec);
        }
        self.cache.read(Key::Uncompressed(id), a as u64, b - a)
    }

    /// Starts a fetch of `id` unless one runs or the span is local. Never blocks on I/O.
    fn kick(&self, id: u32, kind: RequestKind) {
        let Some(slot) = self.slots.get(id as usize) else {
            return;
        };
        let mut st = slot.state.lock();
        if !st.inflight && !self.has(id, Want::Uncompressed) && !self.is_closed() {
            st.inflight = true;
            drop(st);
            self.spawn_job(id, Want::Uncompressed, kind);
        }
    }

    fn ensure(&self, id: u32, want: Want, kind: RequestKind) -> Result<()> {
        let slot =
            self.slots
                .get(id as usize)
                .ok_or(Error::Ztoc(soci_ztoc::Error::Inconsistent {
                    reason: "span id out of range",
                }))?;
        if want == Want::Local && !self.cache.enabled() {
            return Ok(());
        }
        let _fg = (kind == RequestKind::OnDemand).then(|| {
            self.foreground.fetch_add(1, Ordering::Relaxed);
            ForegroundGuard(&self.foreground)
        });
        let deadline = Instant::now() + self.opts.fetch_timeout;
        let mut st = slot.state.lock();
        let mut seen = st.generation;
        loop {
            if self.is_closed() {
                return Err(Error::Shutdown);
            }
            if self.has(id, want) {
                return Ok(());
            }
            if !st.inflight {
                if st.generation != seen {
                    // An attempt finished while we waited and the span is still not here.
                    if let Some(e) = &st.last_error {
                        return Err(Error::Shared(e.clone()));
                    }
                }
                st.inflight = true;
                seen = st.generation;
                drop(st);
                self.spawn_job(id, want, kind);
                st = slot.state.lock();
                continue;
            }
            if slot.done.wait_until(&mut st, deadline).timed_out() && !self.has(id, want) {
                self.metrics.add(|m| &m.timeouts, 1);
                return Err(Error::Timeout { span: id });
            }
        }
    }

    /// Runs one fetch on its own thread; the slot must already be marked in flight.
    fn spawn_job(&self, id: u32, want: Want, kind: RequestKind) {
        let me = self.me.clone();
        let job = move || {
            if let Some(mgr) = me.upgrade() {
                mgr.job(id, want, kind);
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("soci-span".into())
            .spawn(job)
        {
            tracing::warn!(span = id, error = %e, "cannot spawn span fetch thread");
            self.finish(id, Err(Error::io("spawning a span fetch thread")(e)));
        }
    }

    fn job(&self, id: u32, want: Want, kind: RequestKind) {
        let res = self.materialize(id, want, kind);
        if let Err(e) = &res {
            tracing::debug!(span = id, ?kind, error = %e, "span fetch failed");
        }
        self.finish(id, res);
    }

    fn finish(&self, id: u32, res: Result<()>) {
        if let Some(slot) = self.slots.get(id as usize) {
            let mut st = slot.state.lock();
            st.inflight = false;
            st.generation += 1;
            st.last_error = res.err().map(Arc::new);
            slot.done.notify_all();
        }
    }

    fn materialize(&self, id: u32, want: Want, kind: RequestKind) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Shutdown);
        }
        if self.has(id, want) {
            return Ok(());
        }
        let span = self.span(id)?;
        let tar = self.zinfo.compression() == Compression::Uncompressed;
        let compressed = match self.cache.read_all(Key::Compressed(id)) {
            Some(c) => c,
            None => self.fetch(id, &span, kind)?,
        };
        if want == Want::Local {
            let key = if tar {
                Key::Uncompressed(id)
            } else {
                Key::Compressed(id)
            };
            return self.cache.put(key, &compressed);
        }
        let len = span.uncompressed.end - span.uncompressed.start;
        let data = if tar {
            compressed
        } else {
            self.zinfo.inflate_from(
                SpanId(id),
                &compressed,
                UncompressedOffset(span.uncompressed.start),
                len,
            )?
        };
        if data.len() as u64 != len {
            return Err(Error::Ztoc(soci_ztoc::Error::ShortSpan {
                wanted: len,
                got: data.len() as u64,
            }));
        }
        if let Err(e) = self.cache.put(Key::Uncompressed(id), &data) {
            tracing::warn!(span = id, error = %e, "caching decompressed span failed; serving from memory");
        }
        self.cache.remove(Key::Compressed(id));
        self.mem.lock().put(id, Arc::new(data));
        Ok(())
    }

    /// One ranged read of the span's compressed bytes, verified against its digest, refetched
    /// up to `max_span_verification_retries` times on mismatch.
    fn fetch(&self, id: u32, span: &soci_ztoc::Span, kind: RequestKind) -> Result<Vec<u8>> {
        let expected = self.zinfo.span_digest(SpanId(id)).unwrap_or_default();
        let mut attempt = 0;
        loop {
            let data = self
                .source
                .read_exact_at(span.compressed.clone(), kind)
                .map_err(|source| {
                    self.metrics.add(|m| &m.source_errors, 1);
                    Error::Source { span: id, source }
                })?;
            self.metrics.add(|m| &m.bytes_fetched, data.len() as u64);
            let actual = sha256_digest(&data);
            if actual == expected {
                self.record_fetched(span.compressed.clone());
                match kind {
                    RequestKind::OnDemand => self.metrics.add(|m| &m.on_demand_span_fetches, 1),
                    RequestKind::Prefetch => self.metrics.add(|m| &m.prefetch_span_fetches, 1),
                    _ => self.metrics.add(|m| &m.background_span_fetch_count, 1),
                }
                return Ok(data);
            }
            self.metrics.add(|m| &m.digest_mismatches, 1);
            tracing::warn!(span = id, expected, actual = %actual, attempt, "span digest mismatch");
            if attempt >= self.opts.max_span_verification_retries {
                return Err(Error::DigestMismatch {
                    span: id,
                    expected: expected.to_owned(),
                    actual,
                });
            }
            attempt += 1;
        }
    }

    fn record_fetched(&self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let mut v = self.fetched.lock();
        v.push(r);
        v.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(v.len());
        for r in v.drain(..) {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        *v = merged;
    }

    /// Materializes uncompressed bytes `range` into one cache file for FUSE passthrough and
    /// opens it. Only call when [`SpanManager::is_local`] holds (it reads through spans).
    pub(crate) fn materialize_file(&self, node: u32, range: Range<u64>) -> Result<std::fs::File> {
        let key = Key::File(node);
        if let Some(f) = self.cache.open(key) {
            return Ok(f);
        }
        let mut data = Vec::with_capacity((range.end - range.start) as usize);
        let mut off = range.start;
        while off < range.end {
            let chunk = ((range.end - off).min(8 << 20)) as usize;
            let part = self.read(off, chunk)?;
            if part.is_empty() {
                break;
            }
            off += part.len() as u64;
            data.extend_from_slice(&part);
        }
        self.cache.put(key, &data)?;
        self.cache
            .open(key)
            .ok_or_else(|| Error::cache(self.cache.path(key))(std::io::ErrorKind::NotFound.into()))
    }

    pub(crate) fn cache_dir(&self) -> &Path {
        self.cache.dir()
    }
}

/// Fetches `ids` into the decompressed cache with up to `available_parallelism` threads and
/// returns when every span was attempted.
fn run_prefetch(me: &Weak<SpanManager>, ids: Vec<u32>) {
    let n = ids.len();
    let queue = Mutex::new(VecDeque::from(ids));
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(n);
    tracing::debug!(spans = n, workers, "prefetch started");
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let spawned = std::thread::Builder::new()
                .name("soci-prefetch".into())
                .spawn_scoped(scope, || loop {
                    let Some(id) = queue.lock().pop_front() else {
                        return;
                    };
                    let Some(mgr) = me.upgrade() else { return };
                    if let Err(e) = mgr.ensure(id, Want::Uncompressed, RequestKind::Prefetch) {
                        tracing::warn!(span = id, error = %e, "prefetch of span failed; continuing");
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot spawn a prefetch thread");
            }
        }
    });
    // With no worker spawned at all, prefetch on this thread.
    while let Some(id) = queue.lock().pop_front() {
        let Some(mgr) = me.upgrade() else { return };
        if let Err(e) = mgr.ensure(id, Want::Uncompressed, RequestKind::Prefetch) {
            tracing::warn!(span = id, error = %e, "prefetch of span failed; continuing");
        }
    }
}

/// A counting semaphore shared by layers: bounds how many of them run some work (prefetch) at
/// once. `ConcurrencyLimit::new(0)` never waits.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    max: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

impl ConcurrencyLimit {
    /// At most `max` permits held at once; 0 means unlimited.
    pub fn new(max: usize) -> ConcurrencyLimit {
        ConcurrencyLimit {
            max,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Waits for a permit; it is given back when the guard drops.
    pub fn acquire(&self) -> Permit<'_> {
        let mut used = self.used.lock();
        while self.max > 0 && *used >= self.max {
            self.freed.wait(&mut used);
        }
        *used += 1;
        Permit(self)
    }

    /// Permits held now.
    pub fn in_use(&self) -> usize {
        *self.used.lock()
    }
}

/// A permit of a [`ConcurrencyLimit`], released on drop.
#[derive(Debug)]
pub struct Permit<'a>(&'a ConcurrencyLimit);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.used.lock() -= 1;
        self.0.freed.notify_one();
    }
}

/// Threads running a prefetch; [`PrefetchHandle::wait`] joins them. Dropping the handle lets
/// the prefetch go on in the background.
#[derive(Debug)]
pub struct PrefetchHandle {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl PrefetchHandle {
    /// Waits until every requested span was attempted.
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}
