//! Resolving lazy layers (spec §5.5–§5.6): a [`ResolveJob`] unmarshals a layer's zTOC, creates
//! its span manager (reading the gzip header from the registry) and builds its tree. The
//! [`Resolver`] runs the target layer of a mount with `mount_timeout_sec`, and pre-resolves the
//! other layers of the image's SOCI index in the background (a queue of 1024, at most
//! `max_concurrency` at once), keeping the results in a small LRU (`resolve_result_entry`) that
//! the later mounts of those layers take from.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use soci_fs::BlobSource;
use tracing::{debug, info};

use super::fetcher::LayerFetcher;

/// Pre-resolutions waiting at most (spec §5.5: a full queue drops the request).
pub(crate) const PRERESOLVE_QUEUE: usize = 1024;

/// Everything resolving one layer needs, owned so it can run on its own thread.
pub(crate) struct ResolveJob {
    pub(crate) layer: String,
    pub(crate) ztoc_bytes: Vec<u8>,
    pub(crate) source: Arc<dyn BlobSource>,
    /// The registry fetcher behind `source`, whose host is resolved first (`None` for other
    /// sources); handed back with the result.
    pub(crate) fetcher: Option<Arc<LayerFetcher>>,
    pub(crate) cache_parent: PathBuf,
    pub(crate) span_options: soci_fs::SpanOptions,
    pub(crate) metrics: Arc<soci_fs::Metrics>,
}

/// A resolved layer, ready to mount, with the registry fetcher of its job.
pub(crate) type Resolved = (
    Arc<soci_fs::SpanManager>,
    soci_fs::Tree,
    Option<Arc<LayerFetcher>>,
);

impl ResolveJob {
    /// Unmarshals the zTOC (`ztoc_unmarshal`), resolves the registry host of the blob
    /// (`blob_redirect`, spec §5.12), creates the span manager (which reads and checks the blob's
    /// gzip header from the registry) and builds the tree (`init_metadata_store`).
    pub(crate) fn run(self) -> Result<Resolved, String> {
        let chain = |e: &(dyn std::error::Error + 'static)| crate::error::chain(e);
        let t = Instant::now();
        let ztoc = soci_ztoc::Ztoc::from_bytes(&self.ztoc_bytes).map_err(|e| chain(&e))?;
        crate::metrics::observe("ztoc_unmarshal", &self.layer, t.elapsed());
        if let Some(f) = &self.fetcher {
            f.resolve()?;
        }
        let spans = soci_fs::SpanManager::new(
            &ztoc,
            self.source,
            &self.cache_parent,
            self.span_options,
            self.metrics,
        )
        .map_err(|e| chain(&e))?;
        let t = Instant::now();
        let tree = soci_fs::Tree::from_ztoc(&ztoc).map_err(|e| chain(&e))?;
        crate::metrics::observe("init_metadata_store", &self.layer, t.elapsed());
        Ok((spans, tree, self.fetcher))
    }
}

fn timeout_error(layer: &str, timeout: Duration) -> String {
    info!(timeout = ?timeout, layerDigest = %layer, "timeout waiting for layer to resolve");
    format!("timeout waiting for layer {layer} to resolve")
}

/// Runs `job` on its own thread and waits at most `timeout` for it (`mount_timeout_sec`, spec
/// §5.5). On expiry the error is `timeout waiting for layer <digest> to resolve`; the thread
/// finishes on its own and its result is dropped.
pub(crate) fn resolve_within(job: ResolveJob, timeout: Duration) -> Result<Resolved, String> {
    let layer = job.layer.clone();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("soci-resolve".into())
        .spawn(move || {
            let _ = tx.send(job.run());
        })
        .map_err(|e| format!("cannot spawn the resolver thread: {e}"))?;
    match rx.recv_timeout(timeout) {
        Ok(res) => res,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(timeout_error(&layer, timeout)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err("the resolver thread ended without a result".into())
        }
    }
}

#[derive(Default)]
struct State {
    /// Pre-resolutions not started yet, oldest first.
    queue: VecDeque<(String, ResolveJob)>,
    /// Keys being pre-resolved now.
    running: HashSet<String>,
    /// Resolved layers not mounted yet, least recently added first.
    done: VecDeque<(String, Resolved)>,
    workers: usize,
}

impl State {
    fn known(&self, key: &str) -> bool {
        self.running.contains(key)
            || self.queue.iter().any(|(k, _)| k == key)
            || self.done.iter().any(|(k, _)| k == key)
    }

    fn take_done(&mut self, key: &str) -> Option<Resolved> {
        let i = self.done.iter().position(|(k, _)| k == key)?;
        self.done.remove(i).map(|(_, r)| r)
    }
}

/// The pre-resolution queue and the cache of resolved layers. Keys are `<image ref>/<layer
/// digest>`.
pub(crate) struct Resolver {
    state: Mutex<State>,
    changed: Condvar,
    /// Pre-resolutions running at once at most (`None`: unbounded).
    max_workers: Option<usize>,
    cache_size: usize,
    queue_size: usize,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("max_workers", &self.max_workers)
            .field("cache_size", &self.cache_size)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// `max_concurrency` (≤ 0: unbounded) pre-resolutions at once, `cache_size` resolved
    /// layers kept, `queue_size` pre-resolutions waiting at most.
    pub(crate) fn new(max_concurrency: i64, cache_size: usize, queue_size: usize) -> Resolver {
        Resolver {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            max_workers: usize::try_from(max_concurrency).ok().filter(|n| *n > 0),
            cache_size: cache_size.max(1),
            queue_size,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` is queued, being pre-resolved or resolved (so a new request is a duplicate).
    pub(crate) fn knows(&self, key: &str) -> bool {
        self.lock().known(key)
    }

    /// Queues the pre-resolution of `key`. Duplicates are ignored; a full queue drops the
    /// request and counts `preresolve_queue_drop`.
    pub(crate) fn preresolve(self: &Arc<Self>, key: String, job: ResolveJob) {
        let mut st = self.lock();
        if st.known(&key) {
            return;
        }
        if st.queue.len() >= self.queue_size {
            crate::metrics::inc_global("preresolve_queue_drop");
            debug!(key, "pre-resolve queue full; request dropped");
            return;
        }
        st.queue.push_back((key, job));
        if self.max_workers.is_none_or(|m| st.workers < m) {
            st.workers += 1;
            drop(st);
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("soci-preresolve".into())
                .spawn(move || me.work());
            if let Err(e) = spawned {
                debug!(error = %e, "cannot spawn a pre-resolve worker");
                self.lock().workers -= 1;
            }
        }
    }

    fn work(&self) {
        loop {
            let (key, job) = {
                let mut st = self.lock();
                let Some(next) = st.queue.pop_front() else {
                    st.workers -= 1;
                    return;
                };
                st.running.insert(next.0.clone());
                next
            };
            debug!(key, "resolving");
            let res = job.run();
            let mut st = self.lock();
            st.running.remove(&key);
            match res {
                Ok(r) => {
                    debug!(key, "resolved layer");
                    st.done.push_back((key, r));
                    while st.done.len() > self.cache_size {
                        st.done.pop_front();
                    }
                }
                Err(error) => debug!(key, error, "failed to pre-resolve"),
            }
            self.changed.notify_all();
        }
    }

    /// Resolves the target layer of a mount: takes it from the cache, waits for its running
    /// pre-resolution, or runs `job` (dropping a queued pre-resolution of the same key), all
    /// within `timeout` (`timeout waiting for layer <digest> to resolve`). Counts
    /// `resolve_cache_hit` / `resolve_cache_miss` for the layer.
    pub(crate) fn resolve(
        &self,
        key: &str,
        job: ResolveJob,
        timeout: Duration,
    ) -> Result<Resolved, String> {
        let deadline = Instant::now() + timeout;
        let layer = job.layer.clone();
        let mut st = self.lock();
        while st.running.contains(key) {
            let now = Instant::now();
            if now >= deadline {
                return Err(timeout_error(&layer, timeout));
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if let Some(r) = st.take_done(key) {
            debug!("hit layer cache {key:?}");
            crate::metrics::inc("resolve_cache_hit", &layer);
            return Ok(r);
        }
        st.queue.retain(|(k, _)| k != key);
        drop(st);
        crate::metrics::inc("resolve_cache_miss", &layer);
        resolve_within(job, deadline.saturating_duration_since(Instant::now()))
    }

    /// Resolved layers waiting in the cache (tests).
    #[cfg(test)]
    fn cached(&self) -> usize {
        self.lock().done.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use soci_registry::Digest;

    /// A one-file gzip layer, its zTOC bytes and its blob on disk.
    fn small_layer(dir: &std::path::Path) -> (PathBuf, Vec<u8>) {
        let mut b = tar::Builder::new(Vec::new());
        let data = vec![7u8; 300_000];
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "f.bin", &data[..]).expect("tar");
        let tar = b.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar).expect("gzip");
        let blob = gz.finish().expect("gzip");
        let ztoc = soci_ztoc::ZtocBuilder::new()
            .span_size(65536)
            .build(&blob[..])
            .expect("ztoc");
        let path = dir.join("layer.tar.gz");
        std::fs::write(&path, &blob).expect("write");
        (path, ztoc.to_bytes())
    }

    struct Fixture {
        dir: tempfile::TempDir,
        blob: PathBuf,
        ztoc: Vec<u8>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let (blob, ztoc) = small_layer(dir.path());
            Fixture { dir, blob, ztoc }
        }

        fn source(&self) -> Arc<soci_fs::FaultInjector<soci_fs::FileSource>> {
            Arc::new(soci_fs::FaultInjector::new(
                soci_fs::FileSource::open(&self.blob).expect("open"),
            ))
        }

        fn job(&self, layer: &str, source: Arc<dyn BlobSource>) -> ResolveJob {
            ResolveJob {
                layer: layer.to_string(),
                ztoc_bytes: self.ztoc.clone(),
                source,
                fetcher: None,
                cache_parent: self.dir.path().to_path_buf(),
                span_options: soci_fs::SpanOptions::default(),
                metrics: Arc::new(soci_fs::Metrics::default()),
            }
        }
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn resolve_within_times_out_on_a_hung_blob_and_records_latencies() {
        let fx = Fixture::new();
        let ok_layer = Digest::sha256_of(b"resolves").to_string();
        let (spans, tree, _) =
            resolve_within(fx.job(&ok_layer, fx.source()), Duration::from_secs(60))
                .expect("resolve");
        assert!(spans.span_count() >= 1);
        assert_eq!(tree.len(), 2, "root and f.bin");
        let text = crate::metrics::encode();
        for op in ["ztoc_unmarshal", "init_metadata_store"] {
            let line = format!(
                "soci_fs_operation_duration_milliseconds_count{{layer=\"{ok_layer}\",operation_type=\"{op}\"}} 1"
            );
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        // The registry never answers the gzip header read: the mount gives up after the timeout.
        let hung = fx.source();
        hung.set_sticky(Some(soci_fs::Fault::Hang));
        let hung_layer = Digest::sha256_of(b"hangs").to_string();
        let err = resolve_within(
            fx.job(&hung_layer, hung.clone()),
            Duration::from_millis(300),
        )
        .expect_err("hung blob must time out");
        assert_eq!(
            err,
            format!("timeout waiting for layer {hung_layer} to resolve")
        );
        assert!(hung.reads() <= 1);
        hung.set_sticky(None);
        hung.release();
    }

    #[test]
    fn preresolved_layers_are_taken_from_the_cache() {
        let fx = Fixture::new();
        let r = Arc::new(Resolver::new(1, 30, PRERESOLVE_QUEUE));
        let layers: Vec<String> = (0..3)
            .map(|i| Digest::sha256_of(format!("pre{i}").as_bytes()).to_string())
            .collect();
        let sources: Vec<_> = layers.iter().map(|_| fx.source()).collect();
        for (l, s) in layers.iter().zip(&sources) {
            r.preresolve(format!("img/{l}"), fx.job(l, s.clone()));
            // A duplicate request is ignored (its source is never read).
            let dup = fx.source();
            r.preresolve(format!("img/{l}"), fx.job(l, dup.clone()));
            assert_eq!(dup.reads(), 0);
        }
        wait_until("3 pre-resolved layers", || r.cached() == 3);
        assert!(
            sources.iter().all(|s| s.reads() == 1),
            "one header read each"
        );
        // The mount of a pre-resolved layer reads nothing more and counts a cache hit.
        let fresh = fx.source();
        let (spans, _, _) = r
            .resolve(
                &format!("img/{}", layers[1]),
                fx.job(&layers[1], fresh.clone()),
                Duration::from_secs(30),
            )
            .expect("hit");
        assert_eq!(fresh.reads(), 0);
        assert_eq!(sources[1].reads(), 1);
        assert!(spans.span_count() >= 1);
        assert_eq!(crate::metrics::get("resolve_cache_hit", &layers[1]), 1);
        assert_eq!(r.cached(), 2);
        assert!(!r.knows(&format!("img/{}", layers[1])));
        // A layer never pre-resolved is resolved by its own job: a miss.
        let other = Digest::sha256_of(b"other").to_string();
        let own = fx.source();
        r.resolve(
            &format!("img/{other}"),
            fx.job(&other, own.clone()),
            Duration::from_secs(30),
        )
        .expect("miss");
        assert_eq!(own.reads(), 1);
        assert_eq!(crate::metrics::get("resolve_cache_miss", &other), 1);
    }

    #[test]
    fn mount_waits_for_a_running_preresolution_and_the_queue_is_bounded() {
        let fx = Fixture::new();
        let r = Arc::new(Resolver::new(1, 30, 1));
        let slow = Digest::sha256_of(b"slow").to_string();
        let hung = fx.source();
        hung.set_sticky(Some(soci_fs::Fault::Hang));
        r.preresolve(format!("img/{slow}"), fx.job(&slow, hung.clone()));
        wait_until("the pre-resolution to start", || hung.reads() == 1);
        // One worker is busy: the next request waits in the queue (size 1), the one after is
        // dropped and counted.
        let queued = Digest::sha256_of(b"queued").to_string();
        let dropped = Digest::sha256_of(b"dropped").to_string();
        let drops = crate::metrics::get("preresolve_queue_drop", "");
        r.preresolve(format!("img/{queued}"), fx.job(&queued, fx.source()));
        r.preresolve(format!("img/{dropped}"), fx.job(&dropped, fx.source()));
        assert!(crate::metrics::get("preresolve_queue_drop", "") > drops);
        assert!(r.knows(&format!("img/{queued}")));
        assert!(!r.knows(&format!("img/{dropped}")));
        // The mount of the running layer waits for it, within its timeout.
        let own = fx.source();
        let err = r
            .resolve(
                &format!("img/{slow}"),
                fx.job(&slow, own.clone()),
                Duration::from_millis(200),
            )
            .expect_err("still running");
        assert_eq!(err, format!("timeout waiting for layer {slow} to resolve"));
        let releaser = {
            let hung = hung.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                hung.set_sticky(None);
                hung.release();
            })
        };
        r.resolve(
            &format!("img/{slow}"),
            fx.job(&slow, own.clone()),
            Duration::from_secs(30),
        )
        .expect("pre-resolution finished");
        releaser.join().expect("releaser");
        assert_eq!(own.reads(), 0, "the pre-resolved result was used");
        // The queued one runs after the slow one.
        wait_until("the queued layer", || r.cached() == 1);
    }
}
