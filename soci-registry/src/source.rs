//! Upload bodies that are not held in memory: a [`BlobSource`] is opened again for every attempt,
//! so retries and redirects re-read the bytes from the start (or from a chunk's offset).

use std::fmt;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A reader returned by [`BlobSource::open_at`].
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// The bytes of a blob to upload with [`crate::Client::push_blob_from`], read on demand. Each HTTP
/// attempt (first try, retry after a reset or a 5xx, redirect hop, chunk) opens a fresh reader, so
/// an implementation must return the same bytes every time.
pub trait BlobSource: Send + Sync + fmt::Debug {
    /// A reader positioned at byte `offset` of the blob. It may return more bytes than a request
    /// needs; the client reads only the part it sends.
    ///
    /// # Errors
    ///
    /// Failing to open or position the underlying data.
    fn open_at(&self, offset: u64) -> std::io::Result<BlobReader>;
}

/// A file as a [`BlobSource`]: opened and seeked anew for every attempt.
#[derive(Debug, Clone)]
pub struct BlobFile {
    path: PathBuf,
}

impl BlobFile {
    /// The file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> BlobFile {
        BlobFile { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl BlobSource for BlobFile {
    fn open_at(&self, offset: u64) -> std::io::Result<BlobReader> {
        let mut f = std::fs::File::open(&self.path)?;
        if offset > 0 {
            f.seek(SeekFrom::Start(offset))?;
        }
        Ok(Box::pin(tokio::fs::File::from_std(f)))
    }
}

/// A request body: bytes in memory (cheap to clone for retries), or `len` bytes from `offset` of a
/// [`BlobSource`], opened when the request is sent.
#[derive(Clone)]
pub(crate) enum Body {
    Bytes(Bytes),
    Source {
        source: Arc<dyn BlobSource>,
        offset: u64,
        len: u64,
    },
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Bytes(b) => write!(f, "Body::Bytes({} bytes)", b.len()),
            Body::Source { offset, len, .. } => {
                write!(f, "Body::Source({len} bytes at {offset})")
            }
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body::Bytes(b)
    }
}

impl Body {
    /// Size in bytes (sent as `Content-Length`).
    pub(crate) fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Source { len, .. } => *len,
        }
    }

    /// A body for one attempt. A source is opened here, so every attempt starts at its offset; a
    /// source shorter than `len` makes the request fail (the announced length is not reached).
    pub(crate) fn to_reqwest(&self) -> std::io::Result<reqwest::Body> {
        match self {
            Body::Bytes(b) => Ok(reqwest::Body::from(b.clone())),
            Body::Source {
                source,
                offset,
                len,
            } => {
                let reader = source.open_at(*offset)?.take(*len);
                Ok(reqwest::Body::wrap_stream(
                    tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10),
                ))
            }
        }
    }
}

/// What a push uploads: bytes in memory or a [`BlobSource`]; `part` cuts the body of one request.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Bytes(Bytes),
    Source(Arc<dyn BlobSource>),
}

impl Payload {
    pub(crate) fn part(&self, start: u64, end: u64) -> Body {
        match self {
            Payload::Bytes(b) => {
                let (s, e) = (
                    usize::try_from(start).unwrap_or(b.len()),
                    usize::try_from(end).unwrap_or(b.len()),
                );
                Body::Bytes(b.slice(s.min(b.len())..e.min(b.len())))
            }
            Payload::Source(source) => Body::Source {
                source: source.clone(),
                offset: start,
                len: end.saturating_sub(start),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_source_reopens_at_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        std::fs::write(&p, b"0123456789").unwrap();
        let src: Arc<dyn BlobSource> = Arc::new(BlobFile::new(&p));
        let payload = Payload::Source(src);
        for (s, e, want) in [(0, 10, &b"0123456789"[..]), (3, 7, b"3456"), (9, 10, b"9")] {
            let Body::Source {
                source,
                offset,
                len,
            } = payload.part(s, e)
            else {
                panic!("source body")
            };
            // Twice: a retry reads the same bytes again.
            for _ in 0..2 {
                let mut got = Vec::new();
                source
                    .open_at(offset)
                    .unwrap()
                    .take(len)
                    .read_to_end(&mut got)
                    .await
                    .unwrap();
                assert_eq!(got, want);
            }
        }
        let b = Payload::Bytes(Bytes::from_static(b"abcdef")).part(2, 4);
        assert_eq!(b.len(), 2);
        assert!(BlobFile::new(dir.path().join("missing"))
            .open_at(0)
            .is_err());
    }
}
