//! The bridge to `soci-ztoc`: [`ParsedZtoc`] implements [`ZtocInfo`] over a real zTOC and
//! [`ZtocIndexer`] builds zTOCs from layer blobs for [`IndexBuilder::build`].
//!
//! [`IndexBuilder::build`]: crate::IndexBuilder::build

use std::io::Read;

use soci_ztoc::{UncompressedOffset, Ztoc, ZtocBuilder};

use crate::build::{
    is_opaque_whiteout, is_xattr_record, Indexed, LayerIndexer, LayerJob, ZtocInfo,
};
use crate::error::{Error, Result};

/// A zTOC with its serialized bytes and the facts the index builder needs.
#[derive(Debug, Clone)]
pub struct ParsedZtoc {
    ztoc: Ztoc,
    zinfo: soci_ztoc::Zinfo,
    bytes: Vec<u8>,
    has_xattr_records: bool,
    has_opaque_whiteout: bool,
}

impl ParsedZtoc {
    /// Wraps a freshly built zTOC, serializing it.
    ///
    /// # Errors
    ///
    /// [`Error::Ztoc`] if the zTOC's span information is inconsistent.
    pub fn from_ztoc(ztoc: Ztoc) -> Result<Self> {
        let bytes = ztoc.to_bytes();
        Self::new(ztoc, bytes)
    }

    /// Parses stored zTOC bytes (e.g. a zTOC reused from the content store), keeping the bytes as
    /// they are so the descriptor digest is the stored blob's.
    ///
    /// # Errors
    ///
    /// [`Error::Ztoc`] if the bytes are not a valid zTOC.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let ztoc = Ztoc::from_bytes(&bytes)?;
        Self::new(ztoc, bytes)
    }

    fn new(ztoc: Ztoc, bytes: Vec<u8>) -> Result<Self> {
        let zinfo = ztoc.zinfo()?;
        let has_xattr_records = ztoc
            .toc
            .iter()
            .any(|e| e.xattrs.keys().any(|k| is_xattr_record(k)));
        let has_opaque_whiteout = ztoc.toc.iter().any(|e| is_opaque_whiteout(&e.name));
        Ok(Self {
            ztoc,
            zinfo,
            bytes,
            has_xattr_records,
            has_opaque_whiteout,
        })
    }

    /// The decoded zTOC.
    #[must_use]
    pub fn ztoc(&self) -> &Ztoc {
        &self.ztoc
    }

    /// The serialized zTOC, consuming `self`.
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl ZtocInfo for ParsedZtoc {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn has_xattr_records(&self) -> bool {
        self.has_xattr_records
    }

    fn has_opaque_whiteout(&self) -> bool {
        self.has_opaque_whiteout
    }

    fn find_file(&self, name: &[u8]) -> Option<(u64, u64)> {
        // The last entry of that name is the one a reader of the tar ends up with.
        self.ztoc
            .find(name)
            .map(|m| (m.uncompressed_offset.0, m.uncompressed_size))
    }

    fn span_of(&self, uncompressed_offset: u64) -> u32 {
        self.zinfo
            .span_of(UncompressedOffset(uncompressed_offset))
            .0
    }
}

/// A [`LayerIndexer`] that builds every zTOC with `soci-ztoc` from a layer blob the caller opens.
///
/// `open` gets each job and returns a reader over the layer blob (compressed bytes as stored in
/// the registry). The compression is detected from the bytes by `soci-ztoc`; the builder's span
/// size and build tool identifier are used. Reusing zTOCs from an artifacts DB is left to custom
/// indexers (return [`Indexed::reused`] with [`ParsedZtoc::from_bytes`]).
#[derive(Debug)]
pub struct ZtocIndexer<F> {
    build_tool_identifier: String,
    open: F,
}

impl<F> ZtocIndexer<F> {
    /// An indexer that reads layers through `open` and stamps zTOCs with `build_tool_identifier`.
    pub fn new(build_tool_identifier: impl Into<String>, open: F) -> Self {
        Self {
            build_tool_identifier: build_tool_identifier.into(),
            open,
        }
    }
}

impl<F, R> LayerIndexer for ZtocIndexer<F>
where
    F: FnMut(&LayerJob<'_>) -> std::io::Result<R>,
    R: Read,
{
    type Ztoc = ParsedZtoc;
    type Error = Error;

    fn index_layer(&mut self, job: &LayerJob<'_>) -> Result<Indexed<ParsedZtoc>> {
        let reader = (self.open)(job).map_err(Error::ReadLayer)?;
        let ztoc = ZtocBuilder::new()
            .span_size(job.span_size)
            .build_tool_identifier(self.build_tool_identifier.as_str())
            .build(reader)?;
        Ok(Indexed::built(ParsedZtoc::from_ztoc(ztoc)?))
    }
}
