use std::collections::BTreeMap;
use std::fmt;

/// Format version written by every producer (`"0.9"`).
pub const VERSION: &str = "0.9";
/// Build tool identifier the reference CLI writes; used by default so indexes compare equal.
pub const DEFAULT_BUILD_TOOL_IDENTIFIER: &str = "AWS SOCI CLI v0.2";
/// Default span size: 4 MiB of uncompressed data.
pub const DEFAULT_SPAN_SIZE: u64 = 1 << 22;

/// Index of a span (= index of its checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SpanId(pub u32);

/// Offset in the compressed layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CompressedOffset(pub u64);

/// Offset in the uncompressed tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UncompressedOffset(pub u64);

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Compression of the layer blob a zTOC describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip, single or multi-member (FlatBuffers value 1, the schema default).
    Gzip,
    /// A plain tar (FlatBuffers value 2).
    Uncompressed,
}

impl Compression {
    /// The lower-case name readers use (`"gzip"`, `"uncompressed"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Uncompressed => "uncompressed",
        }
    }
}

/// zTOC type of a tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    /// `reg`
    Regular,
    /// `dir`
    Dir,
    /// `symlink`
    Symlink,
    /// `hardlink`
    Hardlink,
    /// `char`
    Char,
    /// `block`
    Block,
    /// `fifo`
    Fifo,
}

impl EntryType {
    /// The string stored in the zTOC.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::Regular => "reg",
            EntryType::Dir => "dir",
            EntryType::Symlink => "symlink",
            EntryType::Hardlink => "hardlink",
            EntryType::Char => "char",
            EntryType::Block => "block",
            EntryType::Fifo => "fifo",
        }
    }

    /// Parses the zTOC type string; `None` for anything else.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        Some(match b {
            b"reg" => EntryType::Regular,
            b"dir" => EntryType::Dir,
            b"symlink" => EntryType::Symlink,
            b"hardlink" => EntryType::Hardlink,
            b"char" => EntryType::Char,
            b"block" => EntryType::Block,
            b"fifo" => EntryType::Fifo,
            _ => return None,
        })
    }
}

impl fmt::Display for EntryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One TOC record: the metadata of one tar entry.
///
/// Strings are byte strings: tar names, link targets and PAX values may be any bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMetadata {
    /// Entry name exactly as in the tar (not cleaned).
    pub name: Vec<u8>,
    /// Entry type.
    pub kind: EntryType,
    /// Offset of the first content byte in the uncompressed tar.
    pub uncompressed_offset: UncompressedOffset,
    /// Content size from the header (after a PAX `size` override).
    pub uncompressed_size: u64,
    /// Link target (symlinks and hardlinks), else empty.
    pub linkname: Vec<u8>,
    /// Raw tar mode field (permissions plus setuid/setgid/sticky).
    pub mode: i64,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Owner name.
    pub uname: Vec<u8>,
    /// Group name.
    pub gname: Vec<u8>,
    /// RFC 3339 modification time (UTC, trailing fractional zeros trimmed).
    pub mod_time: String,
    /// Device major number.
    pub devmajor: i64,
    /// Device minor number.
    pub devminor: i64,
    /// All PAX records of the entry (the field is called `xattrs` in the format), by key.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl FileMetadata {
    /// The name as text, with invalid UTF-8 replaced.
    pub fn name_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    /// Extended attributes: PAX records `SCHILY.xattr.<name>`, prefix stripped.
    pub fn extended_attributes(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.xattrs.iter().filter_map(|(k, v)| {
            k.strip_prefix(b"SCHILY.xattr.")
                .map(|name| (name, v.as_slice()))
        })
    }

    /// `mod_time` as (seconds, nanoseconds) since the Unix epoch; `None` if it does not parse.
    pub fn mod_time_unix(&self) -> Option<(i64, u32)> {
        crate::time::parse_rfc3339(&self.mod_time)
    }
}

/// The `compression_info` table: span layout, digests and the opaque checkpoint blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionInfo {
    /// Layer compression.
    pub algorithm: Compression,
    /// Number of spans − 1.
    pub max_span_id: SpanId,
    /// `sha256:<hex>` of the compressed bytes of each span.
    pub span_digests: Vec<String>,
    /// Gzip checkpoint blob (§2.1) or nested `TarZinfo` (§1.6).
    pub checkpoints: Vec<u8>,
}

/// A decoded zTOC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ztoc {
    /// Format version (`"0.9"`).
    pub version: String,
    /// Free text naming the producer.
    pub build_tool_identifier: String,
    /// Size of the layer blob as stored in the registry.
    pub compressed_archive_size: u64,
    /// Uncompressed bytes up to and including the tar end-of-archive marker.
    pub uncompressed_archive_size: u64,
    /// One record per tar entry, in tar order.
    pub toc: Vec<FileMetadata>,
    /// Spans and checkpoints.
    pub compression: CompressionInfo,
}
