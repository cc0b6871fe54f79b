//! Where compressed layer bytes come from: the [`BlobSource`] trait, a local-file source and a
//! fault-injecting wrapper.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// Why a blob read is made. Sources may use it to pick a connection pool, a priority or a
/// rate limit; soci-fs uses it for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestKind {
    /// A FUSE read is waiting for these bytes.
    OnDemand,
    /// Prefetch (artifact span ranges or sequential read-ahead): wanted soon.
    Prefetch,
    /// The background fetcher filling the cache while nothing else is waiting.
    Background,
}

/// A failed blob read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// An I/O error (local file, socket, ...).
    #[error("i/o error reading blob bytes {start}..{end}")]
    Io {
        /// First byte requested.
        start: u64,
        /// End of the requested range (exclusive).
        end: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The source returned fewer or more bytes than asked for.
    #[error("unexpected data size for blob bytes at {offset}: wanted {wanted}, got {got}")]
    Short {
        /// First byte requested.
        offset: u64,
        /// Bytes requested.
        wanted: u64,
        /// Bytes returned.
        got: u64,
    },
    /// The source gave up waiting (its own deadline).
    #[error("blob read timed out")]
    Timeout,
    /// A remote error, e.g. an HTTP status after the implementor's own retries.
    #[error("remote blob read failed")]
    Remote(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl SourceError {
    /// Whether retrying the same read may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Io { source, .. } => !matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ),
            SourceError::Short { .. } => false,
            SourceError::Timeout | SourceError::Remote(_) => true,
        }
    }
}

/// Retry schedule for [`BlobSource::read_retrying`]: exponential backoff from `min_wait` up to
/// `max_wait`, `max_retries` extra attempts (the reference's `[blob]` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub max_retries: u32,
    /// First backoff.
    pub min_wait: Duration,
    /// Backoff cap.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    /// 8 retries, 30 ms to 300 s, as the reference's `[http]` defaults.
    fn default() -> Self {
        Self {
            max_retries: 8,
            min_wait: Duration::from_millis(30),
            max_wait: Duration::from_secs(300),
        }
    }
}

/// Random access to the compressed bytes of one layer blob.
///
/// One required method. Implementations are called from FUSE worker threads and background
/// threads at once, and may block (a registry implementation bridges into its async client
/// here, never from inside a runtime thread). soci-fs verifies every span digest itself, so a
/// source need not.
pub trait BlobSource: Send + Sync {
    /// Reads bytes `range` of the blob. Should return exactly `range.end - range.start` bytes;
    /// soci-fs checks the length.
    fn read_at(&self, range: Range<u64>, kind: RequestKind) -> Result<Vec<u8>, SourceError>;

    /// [`BlobSource::read_at`] that fails with [`SourceError::Short`] on a wrong length.
    fn read_exact_at(&self, range: Range<u64>, kind: RequestKind) -> Result<Vec<u8>, SourceError> {
        let wanted = range.end.saturating_sub(range.start);
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let offset = range.start;
        let data = self.read_at(range, kind)?;
        if data.len() as u64 != wanted {
            return Err(SourceError::Short {
                offset,
                wanted,
                got: data.len() as u64,
            });
        }
        Ok(data)
    }

    /// [`BlobSource::read_exact_at`] retried on transient errors with exponential backoff.
    /// For sources that do not retry internally.
    fn read_retrying(
        &self,
        range: Range<u64>,
        kind: RequestKind,
        policy: &RetryPolicy,
    ) -> Result<Vec<u8>, SourceError> {
        let mut wait = policy.min_wait;
        let mut attempt = 0;
        loop {
            match self.read_exact_at(range.clone(), kind) {
                Err(e) if e.is_transient() && attempt < policy.max_retries => {
                    tracing::debug!(start = range.start, end = range.end, attempt, error = %e, "blob read failed; retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(policy.max_wait);
                    attempt += 1;
                }
                r => return r,
            }
        }
    }
}

impl<T: BlobSource + ?Sized> BlobSource for std::sync::Arc<T> {
    fn read_at(&self, range: Range<u64>, kind: RequestKind) -> Result<Vec<u8>, SourceError> {
        (**self).read_at(range, kind)
    }
}

/// A layer blob in a local file (tests, the example program, pre-downloaded layers).
#[derive(Debug)]
pub struct FileSource {
    file: File,
}

impl FileSource {
    /// Opens the blob file read-only.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self {
            file: File::open(path)?,
        })
    }

    /// Wraps an open file.
    pub fn from_file(file: File) -> Self {
        Self { file }
    }
}

impl BlobSource for FileSource {
    fn read_at(&self, range: Range<u64>, _kind: RequestKind) -> Result<Vec<u8>, SourceError> {
        let len = usize::try_from(range.end.saturating_sub(range.start)).map_err(|_| {
            SourceError::Short {
                offset: range.start,
                wanted: range.end.saturating_sub(range.start),
                got: 0,
            }
        })?;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, range.start)
            .map_err(|source| SourceError::Io {
                start: range.start,
                end: range.end,
                source,
            })?;
        Ok(buf)
    }
}

/// A fault to inject into reads of a [`FaultInjector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Fail with an I/O error.
    Error,
    /// Return the right number of bytes with one byte flipped (a digest mismatch).
    Corrupt,
    /// Return one byte too few.
    Short,
    /// Block until [`FaultInjector::release`] is called, then read normally.
    Hang,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Faults consumed one per read, front first.
    queue: std::collections::VecDeque<Fault>,
    /// Applied to every read while set.
    sticky: Option<Fault>,
    released: u64,
    delay: Duration,
}

/// Wraps a [`BlobSource`], counting reads and injecting errors, corruption, short reads,
/// delays and hangs. Meant for tests and chaos drills.
#[derive(Debug)]
pub struct FaultInjector<S> {
    inner: S,
    state: Mutex<FaultState>,
    wake: Condvar,
    reads: AtomicU64,
    bytes: AtomicU64,
    log: Mutex<Vec<(Range<u64>, RequestKind)>>,
}

impl<S: BlobSource> FaultInjector<S> {
    /// Wraps `inner` with no faults armed.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            state: Mutex::new(FaultState::default()),
            wake: Condvar::new(),
            reads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        }
    }

    /// The next `n` reads get `fault` (queued after faults already armed).
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut s = self.state.lock();
        s.queue.extend(std::iter::repeat_n(fault, n));
    }

    /// Every read gets `fault` until cleared with `None`.
    pub fn set_sticky(&self, fault: Option<Fault>) {
        self.state.lock().sticky = fault;
    }

    /// Adds a delay before every read.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().delay = delay;
    }

    /// Lets every read currently blocked by [`Fault::Hang`] continue.
    pub fn release(&self) {
        self.state.lock().released += 1;
        self.wake.notify_all();
    }

    /// Reads made so far (including failed ones).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Bytes returned so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Every range requested, in order, with its kind.
    pub fn requests(&self) -> Vec<(Range<u64>, RequestKind)> {
        self.log.lock().clone()
    }

    /// Number of requests per range (to prove single-flight fetching).
    pub fn request_counts(&self) -> HashMap<Range<u64>, usize> {
        let mut m = HashMap::new();
        for (r, _) in self.log.lock().iter() {
            *m.entry(r.clone()).or_insert(0) += 1;
        }
        m
    }
}

impl<S: BlobSource> BlobSource for FaultInjector<S> {
    fn read_at(&self, range: Range<u64>, kind: RequestKind) -> Result<Vec<u8>, SourceError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.log.lock().push((range.clone(), kind));
        let (fault, delay) = {
            let mut s = self.state.lock();
            let f = s.queue.pop_front().or(s.sticky);
            if f == Some(Fault::Hang) {
                let gen = s.released;
                while s.released == gen {
                    self.wake.wait(&mut s);
                }
            }
            (f, s.delay)
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        match fault {
            Some(Fault::Error) => {
                return Err(SourceError::Io {
                    start: range.start,
                    end: range.end,
                    source: io::Error::other("injected fault"),
                })
            }
            Some(Fault::Short) => {
                let mut d = self.inner.read_at(range, kind)?;
                d.pop();
                return Ok(d);
            }
            _ => {}
        }
        let mut d = self.inner.read_at(range, kind)?;
        if fault == Some(Fault::Corrupt) {
            if let Some(b) = d.first_mut() {
                *b ^= 0xff;
            }
        }
        self.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_and_retry() {
        let mut f = tempfile::NamedTempFile::new().expect("tempfile");
        std::io::Write::write_all(&mut f, b"0123456789").expect("write");
        let src = FaultInjector::new(FileSource::open(f.path()).expect("open"));
        assert_eq!(
            src.read_exact_at(2..5, RequestKind::OnDemand)
                .expect("read"),
            b"234"
        );
        src.fail_next(1, Fault::Short);
        assert!(matches!(
            src.read_exact_at(0..4, RequestKind::OnDemand),
            Err(SourceError::Short {
                wanted: 4,
                got: 3,
                ..
            })
        ));
        src.fail_next(2, Fault::Error);
        let policy = RetryPolicy {
            max_retries: 2,
            min_wait: Duration::from_millis(1),
            max_wait: Duration::from_millis(2),
        };
        assert_eq!(
            src.read_retrying(0..2, RequestKind::Background, &policy)
                .expect("retry"),
            b"01"
        );
        assert_eq!(src.reads(), 5);
        assert_eq!(
            src.read_exact_at(3..3, RequestKind::OnDemand)
                .expect("empty"),
            b""
        );
        assert!(src.read_exact_at(8..20, RequestKind::OnDemand).is_err());
    }
}
