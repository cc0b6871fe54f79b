use std::io;

/// Everything that can go wrong while building, decoding or reading through a zTOC.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the layer or writing output failed.
    #[error("i/o error while {context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The layer uses a compression soci-ztoc cannot index.
    #[error("unsupported compression: {0}")]
    UnsupportedCompression(&'static str),
    /// The gzip stream is corrupt.
    #[error("invalid gzip stream at compressed offset {offset}: {reason}")]
    Gzip {
        /// Compressed bytes consumed when the error was found.
        offset: u64,
        /// zlib's description of the problem.
        reason: &'static str,
    },
    /// The gzip stream ended before its trailer.
    #[error("truncated gzip stream after {offset} compressed bytes")]
    TruncatedGzip {
        /// Compressed bytes read in total.
        offset: u64,
    },
    /// The tar stream is malformed.
    #[error("invalid tar archive")]
    Tar(#[source] io::Error),
    /// The tar stream ended in the middle of an entry or header.
    #[error("truncated tar archive at uncompressed offset {offset}")]
    TruncatedTar {
        /// Uncompressed bytes read when the stream ended.
        offset: u64,
    },
    /// A tar entry type that has no zTOC representation (`'7'`, `'g'`, `'S'`, vendor types...).
    #[error("unsupported input tar entry '{}'", char::from(*.0))]
    UnsupportedEntry(u8),
    /// A PAX GNU sparse entry; the zTOC format cannot describe holes.
    #[error("unsupported sparse file {name:?} in layer")]
    SparseEntry {
        /// The entry name.
        name: String,
    },
    /// A header-only entry (dir, link, device, fifo) claims content bytes.
    #[error("tar entry {name:?} of type {kind} has non-zero size {size}")]
    HeaderOnlyWithSize {
        /// The entry name.
        name: String,
        /// Its zTOC type.
        kind: &'static str,
        /// The claimed size.
        size: u64,
    },
    /// Span size 0 is not meaningful for uncompressed layers.
    #[error("span size must be > 0 for uncompressed layers")]
    ZeroSpanSizeForTar,
    /// The zTOC bytes are not a valid FlatBuffers zTOC.
    #[error("invalid ztoc: {reason}")]
    InvalidZtoc {
        /// What is wrong.
        reason: &'static str,
    },
    /// The checkpoint blob has an impossible length.
    #[error("cannot convert blob to gzip_zinfo: length {len} does not fit {count} checkpoints")]
    InvalidCheckpoints {
        /// Blob length.
        len: usize,
        /// Checkpoint count from the header.
        count: i64,
    },
    /// The checkpoint blob is empty.
    #[error("empty checkpoints")]
    EmptyCheckpoints,
    /// zTOC fields disagree with each other (span counts, offsets).
    #[error("inconsistent ztoc: {reason}")]
    Inconsistent {
        /// What is inconsistent.
        reason: &'static str,
    },
    /// A TOC entry overlaps the header of its predecessor.
    #[error("invalid toc entry {name:?} at offset {offset}")]
    InvalidTocEntry {
        /// The entry name.
        name: String,
        /// Its `uncompressed_offset`.
        offset: u64,
    },
    /// A fetched span does not hash to the recorded digest.
    #[error("span {span} digest mismatch: expected {expected}, got {actual}")]
    SpanDigestMismatch {
        /// The span.
        span: u32,
        /// Digest recorded in the zTOC.
        expected: String,
        /// Digest of the bytes read.
        actual: String,
    },
    /// A byte range beyond the end of the uncompressed tar was requested.
    #[error("range {offset}+{len} is outside the uncompressed archive of {size} bytes")]
    OutOfRange {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// `uncompressed_archive_size`.
        size: u64,
    },
    /// Decompression produced fewer bytes than the zTOC promised.
    #[error("span data ended early: wanted {wanted} bytes, got {got}")]
    ShortSpan {
        /// Bytes wanted.
        wanted: u64,
        /// Bytes produced.
        got: u64,
    },
    /// No TOC entry has this name.
    #[error("file {0} does not exist in metadata")]
    FileNotFound(String),
    /// Link targets form a loop or a chain too long to follow.
    #[error("too many levels of links resolving {0}")]
    LinkLoop(String),
    /// The gzip header bytes before span 0 are not a gzip header.
    #[error("invalid gzip header")]
    InvalidGzipHeader,
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }
}
