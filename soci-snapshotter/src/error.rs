//! The crate's error type and its single mapping to gRPC status codes.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the snapshotter. Each variant maps to one gRPC code in [`From<Error> for tonic::Status`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The snapshot (or other object) does not exist.
    #[error("{what}: not found")]
    NotFound {
        /// What was looked up, e.g. `snapshot "k"`.
        what: String,
    },
    /// The object already exists. Remote snapshots use this to tell containerd the layer is ready.
    #[error("{what}: already exists")]
    AlreadyExists {
        /// What exists, e.g. `target snapshot "sha256:…"`.
        what: String,
    },
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The operation is not allowed in the current state (e.g. committing a committed snapshot).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A remote layer backing a snapshot is not reachable.
    #[error("layer {id:?} unavailable: unavailable")]
    Unavailable {
        /// Storage id of the unavailable layer.
        id: String,
    },
    /// A filesystem operation failed.
    #[error("{context} {}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("metadata database")]
    Db(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Remote (lazy) layer handling failed.
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    /// Configuration problem.
    #[error("{0}")]
    Config(String),
    /// A containerd call failed.
    #[error("containerd {call}")]
    Containerd {
        /// The call that failed.
        call: &'static str,
        /// The status returned by containerd.
        #[source]
        source: Box<tonic::Status>,
    },
}

impl Error {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Error {
        Error::NotFound { what: what.into() }
    }

    pub(crate) fn already_exists(what: impl Into<String>) -> Error {
        Error::AlreadyExists { what: what.into() }
    }

    pub(crate) fn db(e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Db(Box::new(e))
    }

    /// True for [`Error::AlreadyExists`].
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// Formats an error with its whole `source()` chain, `a: b: c`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The one place errors become gRPC statuses.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        let msg = chain(&e);
        match e {
            Error::NotFound { .. } => tonic::Status::not_found(msg),
            Error::AlreadyExists { .. } => tonic::Status::already_exists(msg),
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            Error::Unavailable { .. } => tonic::Status::unavailable(msg),
            _ => tonic::Status::internal(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn already_exists_maps_to_already_exists() {
        let s: tonic::Status = Error::already_exists("target snapshot \"x\"").into();
        assert_eq!(s.code(), tonic::Code::AlreadyExists);
        assert_eq!(s.message(), "target snapshot \"x\": already exists");
        let s: tonic::Status = Error::not_found("snapshot \"y\"").into();
        assert_eq!(s.code(), tonic::Code::NotFound);
        let s: tonic::Status = Error::FailedPrecondition("p".into()).into();
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
    }
}
