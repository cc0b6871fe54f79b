use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::source::SourceError;

/// Everything that can go wrong while building, serving or fetching a lazily loaded layer.
///
/// At the FUSE boundary every error becomes an errno through [`Error::errno`]; the read that
/// hit it fails, the next one tries again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The zTOC is invalid or a span could not be decompressed.
    #[error("ztoc error")]
    Ztoc(#[from] soci_ztoc::Error),
    /// Reading from the blob source failed.
    #[error("reading span {span} from the blob source failed")]
    Source {
        /// The span being fetched (`u32::MAX` for the gzip header read).
        span: u32,
        /// What the source reported.
        #[source]
        source: SourceError,
    },
    /// A fetched span did not hash to the digest recorded in the zTOC, even after the
    /// configured number of refetches.
    #[error("span {span} digests do not match: expected {expected} but got {actual}")]
    DigestMismatch {
        /// The span.
        span: u32,
        /// Digest recorded in the zTOC.
        expected: String,
        /// Digest of the bytes the source returned.
        actual: String,
    },
    /// Waiting for a span took longer than the configured timeout.
    #[error("timed out waiting for span {span}")]
    Timeout {
        /// The span.
        span: u32,
    },
    /// The layer is being unmounted or closed.
    #[error("layer is shutting down")]
    Shutdown,
    /// A span was evicted from the cache before the reader could copy it; the read is retried
    /// by the caller.
    #[error("span {span} was evicted before it could be read")]
    Evicted {
        /// The span.
        span: u32,
    },
    /// The span cache directory could not be used.
    #[error("span cache i/o error at {path}")]
    Cache {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A hardlink points to a path that is not (yet) in the layer.
    #[error("hardlink {name:?} points to missing or invalid target {target:?}")]
    HardlinkTarget {
        /// The hardlink entry name.
        name: String,
        /// Its cleaned target.
        target: String,
    },
    /// The layer has more entries than 32-bit node ids can number.
    #[error("too many inodes")]
    TooManyInodes,
    /// A prefetch span range does not lie within the layer's spans.
    #[error("invalid prefetch span range {start}..={end} (max span id {max})")]
    InvalidPrefetchRange {
        /// First span.
        start: u32,
        /// Last span (inclusive).
        end: u32,
        /// Highest span id of the layer.
        max: u32,
    },
    /// A file's tar header does not agree with the metadata the zTOC claims (SPEC §5.8).
    #[error("file {name:?}: {reason}")]
    HeaderMismatch {
        /// Raw TOC name.
        name: String,
        /// `file attributes do not match tar header`, `file name does not match tar header` or
        /// `incorrect tar header size`.
        reason: &'static str,
    },
    /// Mounting or unmounting the FUSE filesystem failed.
    #[error("fuse mount at {path} failed")]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Some other I/O failed.
    #[error("i/o error while {context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The same failure, shared by every reader that waited on one fetch.
    #[error(transparent)]
    Shared(Arc<Error>),
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The errno a FUSE reply carries for this error.
    ///
    /// Data errors (fetch, digest, timeout, cache) are all `EIO`, as the reference does, so
    /// applications see one failure mode; `ENOMEM` and `ENOSPC` are kept when the cache hit them.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Shared(e) => e.errno(),
            Error::Cache { source, .. } | Error::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC) => libc::ENOSPC,
                Some(libc::ENOMEM) => libc::ENOMEM,
                _ => libc::EIO,
            },
            Error::Mount { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }

    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }

    pub(crate) fn cache(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Cache { path, source }
    }

    /// True for [`Error::Timeout`], also when shared.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Shared(e) => e.is_timeout(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(Error::Timeout { span: 1 }.errno(), libc::EIO);
        let nospc = Error::Cache {
            path: "x".into(),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(nospc.errno(), libc::ENOSPC);
        assert_eq!(Error::Shared(Arc::new(nospc)).errno(), libc::ENOSPC);
        assert!(Error::Shared(Arc::new(Error::Timeout { span: 0 })).is_timeout());
    }
}
