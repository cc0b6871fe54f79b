//! Bounded on-disk cache of span data: one file per entry, written to a temporary name and
//! renamed into place so a reader never sees a half-written file, evicted least recently used
//! first beyond a byte budget.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// What a cache file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// The verified compressed bytes of a span (`fetched` state).
    Compressed(u32),
    /// The decompressed bytes of a span (`uncompressed` state).
    Uncompressed(u32),
    /// The whole content of a file, materialized for FUSE passthrough.
    File(u32),
}

impl Key {
    fn file_name(self) -> String {
        match self {
            Key::Compressed(s) => format!("{s}.c"),
            Key::Uncompressed(s) => format!("{s}.u"),
            Key::File(n) => format!("f{n}"),
        }
    }
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<Key, (u64, u64)>,
    lru: BTreeMap<u64, Key>,
    total: u64,
    tick: u64,
}

impl Index {
    fn touch(&mut self, key: Key) -> bool {
        let Some(e) = self.entries.get_mut(&key) else {
            return false;
        };
        self.lru.remove(&e.1);
        self.tick += 1;
        e.1 = self.tick;
        self.lru.insert(self.tick, key);
        true
    }

    fn remove(&mut self, key: Key) -> bool {
        match self.entries.remove(&key) {
            Some((size, tick)) => {
                self.lru.remove(&tick);
                self.total -= size;
                true
            }
            None => false,
        }
    }
}

/// The cache of one layer, in its own directory (removed on drop).
#[derive(Debug)]
pub(crate) struct SpanCache {
    dir: PathBuf,
    budget: u64,
    index: Mutex<Index>,
    tmp_seq: AtomicU64,
    metrics: Arc<Metrics>,
}

static CACHE_SEQ: AtomicU64 = AtomicU64::new(0);

impl SpanCache {
    /// Creates a fresh, empty cache directory under `parent`. `budget` bytes of files are kept;
    /// 0 disables the disk cache.
    pub(crate) fn create(parent: &Path, budget: u64, metrics: Arc<Metrics>) -> Result<Self> {
        fs::create_dir_all(parent).map_err(Error::cache(parent))?;
        let seq = CACHE_SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = parent.join(format!("layer-{}-{seq}-{nanos:08x}", std::process::id()));
        fs::create_dir(&dir).map_err(Error::cache(&dir))?;
        Ok(Self {
            dir,
            budget,
            index: Mutex::new(Index::default()),
            tmp_seq: AtomicU64::new(0),
            metrics,
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn enabled(&self) -> bool {
        self.budget > 0
    }

    pub(crate) fn path(&self, key: Key) -> PathBuf {
        self.dir.join(key.file_name())
    }

    pub(crate) fn contains(&self, key: Key) -> bool {
        self.index.lock().entries.contains_key(&key)
    }

    /// Stores `data` under `key`: write a temporary file, then rename it into place.
    /// Evicts least recently used entries (never `key` itself) to fit the budget.
    pub(crate) fn put(&self, key: Key, data: &[u8]) -> Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            key.file_name(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let path = self.path(key);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(Error::Cache { path, source: e });
        }
        let mut victims = Vec::new();
        {
            let mut ix = self.index.lock();
            ix.remove(key);
            ix.tick += 1;
            let tick = ix.tick;
            ix.entries.insert(key, (data.len() as u64, tick));
            ix.lru.insert(tick, key);
            ix.total += data.len() as u64;
            while ix.total > self.budget {
                let Some((&t, &victim)) = ix.lru.iter().next() else {
                    break;
                };
                if victim == key {
                    // Only the new entry is left; keep it even if it alone exceeds the budget.
                    let _ = t;
                    break;
                }
                ix.remove(victim);
                victims.push(victim);
            }
        }
        for v in victims {
            self.metrics.add(|m| &m.cache_evictions, 1);
            let _ = fs::remove_file(self.path(v));
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` of an entry; `None` if absent (or evicted meanwhile).
    pub(crate) fn read(&self, key: Key, offset: u64, len: usize) -> Option<Vec<u8>> {
        if !self.index.lock().touch(key) {
            return None;
        }
        let mut buf = vec![0u8; len];
        match File::open(self.path(key)).and_then(|f| f.read_exact_at(&mut buf, offset)) {
            Ok(()) => Some(buf),
            Err(e) => {
                tracing::debug!(key = ?key, error = %e, "span cache read failed; treating as a miss");
                self.index.lock().remove(key);
                None
            }
        }
    }

    /// The whole entry.
    pub(crate) fn read_all(&self, key: Key) -> Option<Vec<u8>> {
        let size = self.index.lock().entries.get(&key)?.0;
        self.read(key, 0, usize::try_from(size).ok()?)
    }

    /// Opens the entry read-only (for passthrough backing files).
    pub(crate) fn open(&self, key: Key) -> Option<File> {
        if !self.index.lock().touch(key) {
            return None;
        }
        File::open(self.path(key)).ok()
    }

    pub(crate) fn remove(&self, key: Key) {
        if self.index.lock().remove(key) {
            let _ = fs::remove_file(self.path(key));
        }
    }

    /// Bytes currently stored.
    pub(crate) fn size(&self) -> u64 {
        self.index.lock().total
    }
}

impl Drop for SpanCache {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing span cache failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_within_budget() {
        let parent = tempfile::tempdir().expect("tempdir");
        let m = Arc::new(Metrics::default());
        let c = SpanCache::create(parent.path(), 10, m.clone()).expect("create");
        c.put(Key::Uncompressed(0), b"aaaa").expect("put");
        c.put(Key::Uncompressed(1), b"bbbb").expect("put");
        assert_eq!(
            c.read(Key::Uncompressed(0), 1, 2).as_deref(),
            Some(&b"aa"[..])
        );
        c.put(Key::Compressed(2), b"cccc").expect("put");
        // 1 was least recently used.
        assert!(!c.contains(Key::Uncompressed(1)));
        assert!(c.contains(Key::Uncompressed(0)));
        assert_eq!(c.size(), 8);
        assert_eq!(m.snapshot().cache_evictions, 1);
        // An entry larger than the budget is kept alone.
        c.put(Key::File(3), &[7u8; 20]).expect("put");
        assert_eq!(c.size(), 20);
        assert_eq!(c.read_all(Key::File(3)).map(|v| v.len()), Some(20));
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(c.dir())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f3")]);
        let dir = c.dir().to_path_buf();
        drop(c);
        assert!(!dir.exists());
    }
}
