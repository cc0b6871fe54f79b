//! The `soci` content store: an OCI image layout directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest as _;

use super::error::{Error, Result};
use crate::digest::{Algorithm, Digest};

/// The `imageLayoutVersion` written to `oci-layout`.
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Blobs in an OCI image layout (`<dir>/oci-layout`, `<dir>/index.json`,
/// `<dir>/blobs/<alg>/<hex>`).
///
/// Writes are atomic: the bytes go to a temp file in the blob's directory, are hashed on the way,
/// fsynced, checked against the expected digest and size, and only then renamed into place
/// (followed by an fsync of the directory). A crash leaves at worst a stray `.tmp-*` file, never a
/// blob whose content does not match its name. Writing a blob that already exists is a no-op.
///
/// ```
/// use soci_index::store::ContentStore;
/// use soci_index::Digest;
///
/// let dir = tempfile::tempdir()?;
/// let store = ContentStore::open(dir.path())?;
/// let d = store.put(b"{}")?;
/// assert_eq!(d, Digest::sha256_of(b"{}"));
/// assert_eq!(store.read(&d)?, b"{}");
/// assert!(store.write(&Digest::sha256_of(b"x"), b"y").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) a layout at `dir`: the directory, `oci-layout`, an empty
    /// `index.json` when there is none, and `blobs/`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the directory or files cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let blobs = dir.join("blobs");
        fs::create_dir_all(&blobs).map_err(|e| Error::io("create", &blobs, e))?;
        let layout = dir.join("oci-layout");
        if !layout.exists() {
            let body = format!("{{\"imageLayoutVersion\":\"{OCI_LAYOUT_VERSION}\"}}");
            write_file_atomic(&layout, body.as_bytes())?;
        }
        let index = dir.join("index.json");
        if !index.exists() {
            write_file_atomic(&index, br#"{"schemaVersion":2,"manifests":[]}"#)?;
        }
        Ok(Self { dir })
    }

    /// Opens an existing layout without creating anything.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `dir/blobs` is not a directory.
    pub fn open_existing(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let blobs = dir.join("blobs");
        let meta = fs::metadata(&blobs).map_err(|e| Error::io("open", &blobs, e))?;
        if !meta.is_dir() {
            return Err(Error::io(
                "open",
                blobs,
                io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        Ok(Self { dir })
    }

    /// The layout directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `digest` lives (whether or not it exists).
    #[must_use]
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.encoded())
    }

    /// Whether the blob exists.
    #[must_use]
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The size of the blob, `None` if it does not exist.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] for errors other than "not found".
    pub fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    /// Opens the blob for reading.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if it does not exist, [`Error::Io`] otherwise.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::NotFound {
                    digest: digest.clone(),
                }
            } else {
                Error::io("open", path, e)
            }
        })
    }

    /// Reads the whole blob (not re-verified: blobs are verified when written).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if it does not exist, [`Error::Io`] otherwise.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut f = self.open_blob(digest)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| Error::io("read", self.blob_path(digest), e))?;
        Ok(buf)
    }

    /// Stores `bytes` under their sha256 digest and returns it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if writing fails.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::sha256_of(bytes);
        self.write(&digest, bytes)?;
        Ok(digest)
    }

    /// Stores `bytes` as blob `digest`, verifying that they match.
    ///
    /// # Errors
    ///
    /// [`Error::DigestMismatch`] if they do not, [`Error::Io`] if writing fails.
    pub fn write(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        if self.contains(digest) {
            return Ok(());
        }
        let mut w = self.writer(digest)?;
        w.write_all(bytes)
            .map_err(|e| Error::io("write", w.temp_path().to_owned(), e))?;
        w.commit(Some(bytes.len() as u64))
    }

    /// Streams `reader` into blob `digest`, verifying digest and (if given) size. Returns the
    /// number of bytes stored; an existing blob is left alone and its size returned.
    ///
    /// # Errors
    ///
    /// [`Error::ReadSource`] if `reader` fails, [`Error::DigestMismatch`] /
    /// [`Error::SizeMismatch`] if the content is not what was announced, [`Error::Io`] otherwise.
    pub fn write_from(
        &self,
        digest: &Digest,
        size: Option<u64>,
        mut reader: impl Read,
    ) -> Result<u64> {
        if let Some(existing) = self.size(digest)? {
            return Ok(existing);
        }
        let mut w = self.writer(digest)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::ReadSource {
                        digest: digest.clone(),
                        source: e,
                    })
                }
            };
            w.write_all(&buf[..n])
                .map_err(|e| Error::io("write", w.temp_path().to_owned(), e))?;
        }
        let written = w.written;
        w.commit(size)?;
        Ok(written)
    }

    /// A writer for blob `digest`; call [`BlobWriter::commit`] to make it visible. Dropping it
    /// uncommitted removes the temp file.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the temp file cannot be created.
    pub fn writer(&self, digest: &Digest) -> Result<BlobWriter> {
        let final_path = self.blob_path(digest);
        let dir = final_path
            .parent()
            .map_or_else(|| self.dir.clone(), Path::to_path_buf);
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let temp = temp_name(&dir, digest.encoded());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io("create", &temp, e))?;
        Ok(BlobWriter {
            file: Some(file),
            temp,
            final_path,
            dir,
            expected: digest.clone(),
            hasher: Hasher::new(digest.algorithm()),
            written: 0,
        })
    }

    /// Removes the blob; returns whether it existed.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] for errors other than "not found".
    pub fn delete(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }

    /// Every blob as `(digest, size)`, sorted by digest. Files whose names are not valid digests
    /// (temp files, strays) are ignored.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a directory cannot be read.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let blobs = self.dir.join("blobs");
        let mut out = Vec::new();
        let algs = match fs::read_dir(&blobs) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("read", blobs, e)),
        };
        for alg in algs {
            let alg = alg.map_err(|e| Error::io("read", &blobs, e))?;
            let alg_name = alg.file_name().to_string_lossy().into_owned();
            let alg_dir = alg.path();
            if !alg_dir.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&alg_dir).map_err(|e| Error::io("read", &alg_dir, e))? {
                let entry = entry.map_err(|e| Error::io("read", &alg_dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(digest) = Digest::parse(&format!("{alg_name}:{name}")) else {
                    continue;
                };
                let meta = entry
                    .metadata()
                    .map_err(|e| Error::io("stat", entry.path(), e))?;
                if meta.is_file() {
                    out.push((digest, meta.len()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Replaces `index.json` atomically with `bytes`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if writing fails.
    pub fn write_index_json(&self, bytes: &[u8]) -> Result<()> {
        write_file_atomic(&self.dir.join("index.json"), bytes)
    }

    /// Reads `index.json`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot be read.
    pub fn read_index_json(&self) -> Result<Vec<u8>> {
        let p = self.dir.join("index.json");
        fs::read(&p).map_err(|e| Error::io("read", p, e))
    }
}

/// An uncommitted blob; see [`ContentStore::writer`].
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<File>,
    temp: PathBuf,
    final_path: PathBuf,
    dir: PathBuf,
    expected: Digest,
    hasher: Hasher,
    written: u64,
}

impl BlobWriter {
    /// The temp file being written.
    #[must_use]
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Bytes written so far.
    #[must_use]
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies digest and (if given) size, fsyncs and renames the blob into place.
    ///
    /// # Errors
    ///
    /// [`Error::DigestMismatch`] / [`Error::SizeMismatch`] (the temp file is removed), or
    /// [`Error::Io`].
    pub fn commit(mut self, size: Option<u64>) -> Result<()> {
        let file = self
            .file
            .take()
            .expect("invariant: file is present until commit");
        if let Some(expected) = size {
            if expected != self.written {
                return Err(Error::SizeMismatch {
                    digest: self.expected.clone(),
                    expected,
                    actual: self.written,
                });
            }
        }
        let actual = self.hasher.finish();
        if actual != self.expected.encoded() {
            let actual = Digest::parse(&format!("{}:{actual}", self.expected.algorithm()))
                .expect("invariant: a hex hash of the right length is a valid digest");
            return Err(Error::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            });
        }
        file.sync_all()
            .map_err(|e| Error::io("fsync", &self.temp, e))?;
        drop(file);
        fs::rename(&self.temp, &self.final_path)
            .map_err(|e| Error::io("rename", &self.final_path, e))?;
        sync_dir(&self.dir);
        // The temp file is gone; make Drop a no-op.
        self.temp = PathBuf::new();
        Ok(())
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[derive(Debug)]
enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Sha384 => Self::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Self::Sha512(sha2::Sha512::new()),
            _ => Self::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    fn finish(&mut self) -> String {
        match self {
            Self::Sha256(h) => hex::encode(h.finalize_reset()),
            Self::Sha384(h) => hex::encode(h.finalize_reset()),
            Self::Sha512(h) => hex::encode(h.finalize_reset()),
        }
    }
}

fn temp_name(dir: &Path, stem: &str) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".tmp-{stem}-{}-{n}", std::process::id()))
}

/// Writes a small file atomically (temp + fsync + rename + directory fsync).
pub(crate) fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let stem = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let temp = temp_name(dir, &stem);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io("create", &temp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("write", &temp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &temp, e))?;
        fs::rename(&temp, path).map_err(|e| Error::io("rename", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    } else {
        sync_dir(dir);
    }
    result
}

fn sync_dir(dir: &Path) {
    // Best effort: makes the rename durable; some filesystems refuse fsync on directories.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_verify_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        assert!(dir.path().join("oci-layout").is_file());
        let d = store.put(b"hello").unwrap();
        assert!(store.contains(&d));
        assert_eq!(store.size(&d).unwrap(), Some(5));
        // Idempotent.
        store.write(&d, b"hello").unwrap();
        let bad = Digest::sha256_of(b"other");
        let err = store.write(&bad, b"hello").unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!store.contains(&bad));
        let err = store
            .write_from(&Digest::sha256_of(b"abc"), Some(4), &b"abc"[..])
            .unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
        assert_eq!(store.list().unwrap(), vec![(d.clone(), 5)]);
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(store.delete(&d).unwrap());
        assert!(!store.delete(&d).unwrap());
        assert!(store.read(&d).unwrap_err().is_not_found());
    }
}
