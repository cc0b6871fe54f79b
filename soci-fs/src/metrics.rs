//! Counters of one layer (or shared by several), cheap to bump from any thread, and the
//! [`Observer`] that receives the duration of timed operations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The timed operations soci-fs reports to an [`Observer`]; [`Operation::name`] is the
/// `operation_type` of the spec's latency histograms (§5.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// One FUSE `read` of a file, from request to reply (`synchronous_read`).
    SynchronousRead,
    /// One FUSE `readdir` (`node_readdir`).
    NodeReaddir,
    /// The background fetcher made the last span of a layer local: time since the layer was
    /// queued (`background_fetch`).
    BackgroundFetch,
}

impl Operation {
    /// The spec's name of the operation.
    pub fn name(self) -> &'static str {
        match self {
            Operation::SynchronousRead => "synchronous_read",
            Operation::NodeReaddir => "node_readdir",
            Operation::BackgroundFetch => "background_fetch",
        }
    }
}

/// Receives the duration of every timed [`Operation`] of the layers whose [`Metrics`] it is
/// attached to ([`Metrics::with_observer`]). Called on FUSE and fetcher threads: keep it cheap
/// and non-blocking. The snapshotter implements it over its Prometheus histograms, so soci-fs
/// needs no metrics library.
pub trait Observer: Send + Sync {
    /// `op` took `elapsed`.
    fn observe(&self, op: Operation, elapsed: Duration);

    /// A FUSE operation failed (one of the `fuse_*_failures` counters was just incremented),
    /// e.g. to raise the spec's `fuse_failure_state`. By default nothing.
    fn fuse_failure(&self) {}
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Atomic counters of a lazily loaded layer. Share one `Arc<Metrics>` between layers to
        /// aggregate. Read them with [`Metrics::snapshot`]; the snapshotter exports them.
        #[derive(Default)]
        pub struct Metrics {
            $(pub(crate) $name: AtomicU64,)*
            observer: Option<Arc<dyn Observer>>,
        }

        impl std::fmt::Debug for Metrics {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Metrics")
                    .field("counters", &self.snapshot())
                    .field("observer", &self.observer.is_some())
                    .finish()
            }
        }

        /// A point-in-time copy of [`Metrics`].
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct MetricsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Metrics {
            /// Copies every counter.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// FUSE reads served (`synchronous_read_count`).
    synchronous_read_count,
    /// Bytes returned to FUSE reads (`synchronous_bytes_served`).
    synchronous_bytes_served,
    /// Microseconds spent in FUSE reads, summed.
    synchronous_read_micros,
    /// Spans fetched from the source because a FUSE read needed them
    /// (`synchronous_read_remote_registry_fetch_count`).
    on_demand_span_fetches,
    /// Spans fetched for prefetch or read-ahead.
    prefetch_span_fetches,
    /// Spans fetched by the background fetcher (`background_span_fetch_count`).
    background_span_fetch_count,
    /// Background span fetches that failed (`background_span_fetch_failure_count`).
    background_span_fetch_failure_count,
    /// Compressed bytes read from the source.
    bytes_fetched,
    /// Source reads that failed (I/O, short read, remote error).
    source_errors,
    /// Fetched spans whose digest did not match.
    digest_mismatches,
    /// Reads that gave up waiting for a span.
    timeouts,
    /// Span reads served from the memory or disk cache.
    cache_hits,
    /// Span reads that had to fetch or decompress first.
    cache_misses,
    /// Cache files evicted to stay within the byte budget.
    cache_evictions,
    /// Opens that used FUSE passthrough.
    passthrough_opens,
    /// Failed FUSE `read`s (`fuse_file_read_failure_count`).
    fuse_read_failures,
    /// Failed FUSE `open`s (`fuse_node_open_failure_count`).
    fuse_open_failures,
    /// Failed FUSE `lookup`s other than plain ENOENT (`fuse_node_lookup_failure_count`).
    fuse_lookup_failures,
    /// Failed FUSE `getattr`s (`fuse_node_getattr_failure_count`).
    fuse_getattr_failures,
    /// Failed FUSE `readdir`s (`fuse_node_readdir_failure_count`).
    fuse_readdir_failures,
    /// Failed FUSE `listxattr`s (`fuse_node_listxattr_failure_count`).
    fuse_listxattr_failures,
    /// FUSE `getattr`s of directories and other non-file nodes (`node.Getattr`).
    node_getattr_count,
    /// FUSE `getattr`s of regular files (`file.Getattr`).
    file_getattr_count,
    /// FUSE `getattr`s of whiteouts (`whiteout.Getattr`).
    whiteout_getattr_count,
    /// FUSE `getxattr`s (`node.Getxattr`).
    node_getxattr_count,
    /// FUSE `listxattr`s (`node.Listxattr`).
    node_listxattr_count,
    /// FUSE `lookup`s (`node.Lookup`).
    node_lookup_count,
    /// FUSE `open`s (`node.Open`).
    node_open_count,
    /// FUSE `readdir`s (`node.Readdir`).
    node_readdir_count,
    /// FUSE `readlink`s (`node.Readlink`).
    node_readlink_count,
    /// FUSE `read`s, failed ones included (`file.Read`).
    file_read_count,
}

impl Metrics {
    /// Counters at zero that report timed operations to `observer`.
    pub fn with_observer(observer: Arc<dyn Observer>) -> Metrics {
        Metrics {
            observer: Some(observer),
            ..Metrics::default()
        }
    }

    /// Reports that `op` took `elapsed` to the observer, if any.
    pub(crate) fn observe(&self, op: Operation, elapsed: Duration) {
        if let Some(o) = &self.observer {
            o.observe(op, elapsed);
        }
    }

    /// Counts a failed FUSE operation in `f` and tells the observer.
    pub(crate) fn fuse_failed(&self, f: fn(&Metrics) -> &AtomicU64) {
        self.add(f, 1);
        if let Some(o) = &self.observer {
            o.fuse_failure();
        }
    }

    pub(crate) fn add(&self, f: fn(&Metrics) -> &AtomicU64, n: u64) {
        f(self).fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_copies() {
        let m = Metrics::default();
        m.add(|m| &m.timeouts, 2);
        m.add(|m| &m.bytes_fetched, 7);
        let s = m.snapshot();
        assert_eq!((s.timeouts, s.bytes_fetched, s.source_errors), (2, 7, 0));
    }

    #[derive(Default)]
    struct Record(parking_lot::Mutex<Vec<(Operation, Duration)>>);

    impl Observer for Record {
        fn observe(&self, op: Operation, elapsed: Duration) {
            self.0.lock().push((op, elapsed));
        }
    }

    #[test]
    fn observer_receives_operations() {
        let rec = Arc::new(Record::default());
        let m = Metrics::with_observer(rec.clone());
        m.observe(Operation::NodeReaddir, Duration::from_micros(3));
        Metrics::default().observe(Operation::SynchronousRead, Duration::from_micros(1));
        assert_eq!(
            *rec.0.lock(),
            vec![(Operation::NodeReaddir, Duration::from_micros(3))]
        );
        assert_eq!(Operation::SynchronousRead.name(), "synchronous_read");
        assert_eq!(Operation::BackgroundFetch.name(), "background_fetch");
    }
}
