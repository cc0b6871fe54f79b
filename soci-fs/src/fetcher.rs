//! The background fetcher (SPEC §5.9): fills the caches of mounted layers while no reader is
//! waiting.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::metrics::Operation;
use crate::spans::{SpanManager, SpanState};

/// What to drop when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropPolicy {
    /// Drop the layer being added (the reference default).
    Newest,
    /// Drop the layer at the head of the queue.
    Oldest,
}

/// Background fetch settings; the reference's `[background_fetch]` keys, with better defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BackgroundFetchOptions {
    /// Do not start the fetcher (`disable`). By default false.
    pub disable: bool,
    /// Pause after [`BackgroundFetcher::pause`] (`silence_period_msec`). By default 0: the
    /// fetcher already yields to every waiting read, so no blanket pause is needed.
    pub silence_period: Duration,
    /// Minimum time between span fetch starts across all layers (`fetch_period_msec`).
    /// By default 0 (no rate limit; concurrency is bounded instead).
    pub fetch_period: Duration,
    /// Queued layers at most (`max_queue_size`, `None` = unlimited). By default 300.
    pub max_queue_size: Option<usize>,
    /// What to drop when full (`drop_policy`). By default [`DropPolicy::Newest`].
    pub drop_policy: DropPolicy,
    /// How often the queue length is logged and published (`emit_metric_period_sec`).
    /// By default 10 s.
    pub emit_metric_period: Duration,
    /// Span fetches running at once across all layers. By default 2.
    pub max_concurrency: usize,
    /// How long a worker sleeps while an on-demand read is waiting. By default 5 ms.
    pub yield_interval: Duration,
}

impl Default for BackgroundFetchOptions {
    fn default() -> Self {
        Self {
            disable: false,
            silence_period: Duration::ZERO,
            fetch_period: Duration::ZERO,
            max_queue_size: Some(300),
            drop_policy: DropPolicy::Newest,
            emit_metric_period: Duration::from_secs(10),
            max_concurrency: 2,
            yield_interval: Duration::from_millis(5),
        }
    }
}

/// Counters of the background fetcher.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetcherStats {
    /// Spans made local (or found local).
    pub spans: u64,
    /// Span fetches that failed.
    pub failures: u64,
    /// Layers dropped because the queue was full (`background_fetch_work_queue_evicted`).
    pub evicted: u64,
    /// Layers queued now (`background_fetch_work_queue_size`).
    pub queue_size: u64,
    /// Layers whose spans are all local.
    pub layers_done: u64,
}

#[derive(Debug)]
struct Cursor {
    layer: Weak<SpanManager>,
    next: u32,
    queued: Instant,
}

#[derive(Debug, Default)]
struct Queue {
    cursors: VecDeque<Cursor>,
    all: Vec<Weak<SpanManager>>,
    paused_until: Option<Instant>,
    next_start: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    opts: BackgroundFetchOptions,
    queue: Mutex<Queue>,
    wake: Condvar,
    stop: AtomicBool,
    spans: AtomicU64,
    failures: AtomicU64,
    evicted: AtomicU64,
    layers_done: AtomicU64,
}

/// Fetches the remaining spans of queued layers round-robin with bounded concurrency, and
/// steps aside whenever any registered layer has a reader waiting for a span.
#[derive(Debug)]
pub struct BackgroundFetcher {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl BackgroundFetcher {
    /// Starts the worker threads (none when `disable` is set).
    pub fn new(opts: BackgroundFetchOptions) -> Self {
        let workers = if opts.disable {
            0
        } else {
            opts.max_concurrency.max(1)
        };
        let shared = Arc::new(Shared {
            opts,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            spans: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            layers_done: AtomicU64::new(0),
        });
        let workers = (0..workers)
            .filter_map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("soci-bgfetch-{i}"))
                    .spawn(move || s.work())
                    .ok()
            })
            .collect();
        Self { shared, workers }
    }

    /// Queues a layer. Returns false if it was dropped because the queue is full (policy
    /// `newest`) or the fetcher is disabled. Never blocks.
    pub fn add_layer(&self, layer: &Arc<SpanManager>) -> bool {
        if self.workers.is_empty() {
            return false;
        }
        let mut q = self.shared.queue.lock();
        q.all.retain(|w| w.strong_count() > 0);
        q.all.push(Arc::downgrade(layer));
        if let Some(max) = self.shared.opts.max_queue_size {
            if q.cursors.len() >= max {
                self.shared.evicted.fetch_add(1, Ordering::Relaxed);
                match self.shared.opts.drop_policy {
                    DropPolicy::Newest => return false,
                    DropPolicy::Oldest => {
                        q.cursors.pop_front();
                    }
                }
            }
        }
        q.cursors.push_back(Cursor {
            layer: Arc::downgrade(layer),
            next: 0,
            queued: Instant::now(),
        });
        self.shared.wake.notify_all();
        true
    }

    /// Pauses for `silence_period` (coalesced), e.g. when an image is first mounted.
    pub fn pause(&self) {
        if self.shared.opts.silence_period.is_zero() {
            return;
        }
        self.shared.queue.lock().paused_until =
            Some(Instant::now() + self.shared.opts.silence_period);
    }

    /// Current counters.
    pub fn stats(&self) -> FetcherStats {
        FetcherStats {
            spans: self.shared.spans.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
            evicted: self.shared.evicted.load(Ordering::Relaxed),
            queue_size: self.shared.queue.lock().cursors.len() as u64,
            layers_done: self.shared.layers_done.load(Ordering::Relaxed),
        }
    }

    /// Stops and joins the workers (fetches in flight finish on their own threads).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _q = self.shared.queue.lock();
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for BackgroundFetcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn foreground_busy(q: &Queue) -> bool {
        q.all
            .iter()
            .filter_map(Weak::upgrade)
            .any(|l| l.foreground_busy())
    }

    /// Picks the next (layer, span) to fetch, waiting while paused, rate limited, idle or while
    /// a reader waits.
    fn next_job(&self) -> Option<(Arc<SpanManager>, u32)> {
        let mut last_emit = Instant::now();
        let mut q = self.queue.lock();
        loop {
            if self.stopped() {
                return None;
            }
            if last_emit.elapsed() >= self.opts.emit_metric_period {
                tracing::debug!(queue_size = q.cursors.len(), "background fetch queue");
                last_emit = Instant::now();
            }
            let now = Instant::now();
            let wait_until = [q.paused_until, q.next_start]
                .into_iter()
                .flatten()
                .filter(|t| *t > now)
                .max();
            if let Some(t) = wait_until {
                self.wake.wait_until(&mut q, t);
                continue;
            }
            if Self::foreground_busy(&q) {
                self.wake.wait_for(&mut q, self.opts.yield_interval);
                continue;
            }
            let Some(mut c) = q.cursors.pop_front() else {
                self.wake.wait_for(&mut q, Duration::from_millis(200));
                continue;
            };
            let Some(layer) = c.layer.upgrade().filter(|l| !l.is_closed()) else {
                continue;
            };
            // Skip spans already local or being fetched (they count as done).
            while c.next < layer.span_count() && layer.state(c.next) != SpanState::Unrequested {
                c.next += 1;
            }
            if c.next >= layer.span_count() {
                self.layers_done.fetch_add(1, Ordering::Relaxed);
                layer
                    .metrics()
                    .observe(Operation::BackgroundFetch, c.queued.elapsed());
                tracing::debug!("background fetch of layer complete");
                continue;
            }
            let id = c.next;
            c.next += 1;
            q.cursors.push_back(c);
            if !self.opts.fetch_period.is_zero() {
                q.next_start = Some(now + self.opts.fetch_period);
            }
            return Some((layer, id));
        }
    }

    fn work(&self) {
        while let Some((layer, id)) = self.next_job() {
            match layer.fetch_background(id) {
                Ok(()) => {
                    self.spans.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    layer
                        .metrics()
                        .add(|m| &m.background_span_fetch_failure_count, 1);
                    tracing::warn!(span = id, error = %e, "error trying to resolve layer, removing it from the queue");
                    let mut q = self.queue.lock();
                    q.cursors
                        .retain(|c| !std::ptr::eq(c.layer.as_ptr(), Arc::as_ptr(&layer)));
                }
            }
        }
    }
}
