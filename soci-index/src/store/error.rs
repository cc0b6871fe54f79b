//! Errors of the local stores.

use std::path::PathBuf;

use crate::digest::Digest;

/// Result alias of [`crate::store`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the content store or the artifacts DB.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation failed.
    #[error("failed to {op} {path}")]
    Io {
        /// What was attempted (`create`, `read`, `rename`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Reading the data to store failed.
    #[error("failed to read content for {digest}")]
    ReadSource {
        /// The blob being written.
        digest: Digest,
        /// The reader's error.
        #[source]
        source: std::io::Error,
    },

    /// Written content does not hash to the expected digest.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller announced.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },

    /// Written content does not have the expected size.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The announced size.
        expected: u64,
        /// The size received.
        actual: u64,
    },

    /// The blob is not in the content store.
    #[error("{digest}: not found")]
    NotFound {
        /// The missing blob.
        digest: Digest,
    },

    /// A content store outside this crate (e.g. containerd's, behind [`super::BlobStore`])
    /// failed.
    #[error("content store error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The embedded database failed.
    #[error("artifacts database error")]
    Database(#[source] Box<redb::Error>),

    /// A stored record could not be decoded.
    #[error("corrupt artifacts database record {key}")]
    CorruptRecord {
        /// The record key.
        key: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether this is [`Error::NotFound`].
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Self::Database(Box::new(redb::Error::from(e)))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
