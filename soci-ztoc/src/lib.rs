#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]
// Unit tests may unwrap: a panic there is a test failure with a backtrace.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod build;
mod error;
mod fbs;
mod time;
mod types;
mod zinfo;
mod zlib;
mod ztoc;

pub use build::ZtocBuilder;
pub use error::{Error, Result};
pub use types::{
    CompressedOffset, Compression, CompressionInfo, EntryType, FileMetadata, SpanId,
    UncompressedOffset, Ztoc, DEFAULT_BUILD_TOOL_IDENTIFIER, DEFAULT_SPAN_SIZE, VERSION,
};
pub use zinfo::{sha256_digest, Checkpoint, GzipCheckpoints, ReadAt, Span, Zinfo, WINDOW_SIZE};
pub use ztoc::{clean, EntryLayout};
