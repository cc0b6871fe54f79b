#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

mod cache;
mod error;
mod fetcher;
mod fs;
mod idmap;
mod metrics;
mod mount;
pub mod source;
mod spans;
mod tree;
mod verify;

pub use error::{Error, Result};
pub use fetcher::{BackgroundFetchOptions, BackgroundFetcher, DropPolicy, FetcherStats};
pub use fs::{FsOptions, LayerFs, OpaqueXattrs, STATE_DIR};
pub use idmap::{IdMap, IdMapError, IdRange, OVERFLOW_ID};
pub use metrics::{Metrics, MetricsSnapshot, Observer, Operation};
pub use mount::{mount, MountHandle, MountOptions};
pub use source::{
    BlobSource, Fault, FaultInjector, FileSource, RequestKind, RetryPolicy, SourceError,
};
pub use spans::{ConcurrencyLimit, Permit, PrefetchHandle, SpanManager, SpanOptions, SpanState};
pub use tree::Tree;
