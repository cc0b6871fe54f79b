//! Build and read **zTOCs**, the index that makes a gzip (or plain tar) container image layer
//! seekable: a table of contents of the tar plus *checkpoints* that let any byte range be
//! inflated without reading the layer from its start.
//!
//! The format is the one the SOCI snapshotter uses; bytes, digests and checkpoint blobs are
//! compatible with the reference implementation.
//!
//! Core types:
//! - [`ZtocBuilder`]: one streaming pass over a layer (`impl Read`) gives a [`Ztoc`].
//! - [`Ztoc`]: the decoded zTOC; [`Ztoc::from_bytes`] / [`Ztoc::to_bytes`] (FlatBuffers).
//! - [`FileMetadata`]: one tar entry of the TOC.
//! - [`Zinfo`]: span geometry and decompression ([`Zinfo::read_range`], [`Zinfo::decompress_span`]).
//! - [`ReadAt`]: the small random-access trait extraction reads the layer through.
//!
//! ```
//! use std::io::Write;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A gzip'd tar layer with one file.
//! let mut tar = tar::Builder::new(Vec::new());
//! let mut h = tar::Header::new_gnu();
//! h.set_size(5);
//! h.set_mode(0o644);
//! h.set_cksum();
//! tar.append_data(&mut h, "hello.txt", &b"hello"[..])?;
//! let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
//! gz.write_all(&tar.into_inner()?)?;
//! let layer = gz.finish()?;
//!
//! let ztoc = soci_ztoc::ZtocBuilder::new().build(&layer[..])?;
//! let bytes = ztoc.to_bytes();                       // store or push these
//! let ztoc = soci_ztoc::Ztoc::from_bytes(&bytes)?;
//! let zinfo = ztoc.zinfo()?;
//! assert_eq!(ztoc.extract_file(&zinfo, &layer, b"hello.txt")?, b"hello");
//! # Ok(()) }
//! ```
//!
//! The crate is synchronous and does no I/O of its own beyond the readers it is given: no
//! threads, sockets or paths. It has no optional features.
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

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
