//! The crate's error type.

use std::fmt;

use crate::digest::Digest;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
///
/// Messages are lowercase and describe only this layer; causes are reachable through
/// [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A string is not a valid OCI digest.
    #[error("invalid digest {value:?}: {reason}")]
    InvalidDigest {
        /// The rejected string.
        value: String,
        /// Why it was rejected.
        reason: DigestError,
    },

    /// A JSON document could not be decoded.
    #[error("failed to decode {what}")]
    Decode {
        /// What kind of document it was (e.g. `SOCI index`).
        what: &'static str,
        /// The parser's error.
        #[source]
        source: JsonError,
    },

    /// A value could not be encoded as JSON.
    #[error("failed to encode JSON")]
    Encode(#[source] JsonError),

    /// A SOCI index whose `config.mediaType` is neither the v1 nor the v2 artifact type
    /// (spec §4.2).
    #[error("unknown index version: {media_type}")]
    UnknownIndexVersion {
        /// The `config.mediaType` found.
        media_type: String,
    },

    /// A prefetch artifact with a `version` other than `1.0` (spec §4.4).
    #[error("unsupported prefetch artifact version: {version}")]
    UnsupportedPrefetchVersion {
        /// The version found.
        version: String,
    },

    /// A prefetch artifact without spans (spec §4.4).
    #[error("prefetch artifact is empty")]
    EmptyPrefetchArtifact,

    /// An image index that is being converted has an unexpected media type (spec §4.6 step 2).
    #[error("unexpected image index media type: {media_type}")]
    UnexpectedImageIndexMediaType {
        /// The media type found.
        media_type: String,
    },

    /// A manifest "layer" whose media type is not a layer type; aborts the index build
    /// (spec §2.7, §4.5).
    #[error("not a layer mediaType: {media_type}")]
    NotALayer {
        /// The offending media type.
        media_type: String,
    },

    /// An OCI layer media type whose base type is not known (containerd refuses to classify it).
    #[error("unrecognised mediatype {media_type}")]
    UnrecognisedLayerMediaType {
        /// The offending media type.
        media_type: String,
    },

    /// Building (or loading) the zTOC of one layer failed; aborts the whole index build.
    #[error("errors encountered while building soci layers: layer {layer}")]
    BuildLayer {
        /// Digest of the image layer.
        layer: Digest,
        /// The indexer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// [`IndexPlan::finish`](crate::IndexPlan::finish) got no zTOC for a layer it planned to index.
    #[error("no ztoc supplied for layer {position} ({layer})")]
    MissingZtoc {
        /// Position of the layer in the image manifest.
        position: usize,
        /// Digest of the image layer.
        layer: Digest,
    },

    /// [`IndexPlan::finish`](crate::IndexPlan::finish) got a zTOC for a position that needs none
    /// (skipped, out of range, or supplied twice).
    #[error("unexpected ztoc supplied for layer position {position}")]
    UnexpectedZtoc {
        /// The position given.
        position: usize,
    },

    /// Every layer was skipped (spec §4.5 step 4).
    #[error("no ztocs created, all layers either skipped or produced errors")]
    NoZtocs,

    /// Reading a layer blob to build its zTOC failed.
    #[error("failed to read layer blob")]
    ReadLayer(#[source] std::io::Error),

    /// `soci-ztoc` could not build or parse a zTOC.
    #[error(transparent)]
    Ztoc(#[from] soci_ztoc::Error),

    /// An unknown `--optimizations` value.
    #[error("optimization {name} is not a valid optimization [xattr]")]
    InvalidOptimization {
        /// The rejected name.
        name: String,
    },

    /// A platform string is not `os/arch[/variant]`.
    #[error("invalid platform {value:?}: expected os/arch[/variant]")]
    InvalidPlatform {
        /// The rejected string.
        value: String,
    },
}

/// Why a digest string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestError {
    /// There is no `:` separating algorithm and encoded part.
    MissingSeparator,
    /// The algorithm is not sha256, sha384 or sha512.
    UnsupportedAlgorithm(String),
    /// The encoded part is not lowercase hex of the algorithm's length.
    InvalidEncoded,
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingSeparator => f.write_str("missing ':' between algorithm and hex"),
            Self::UnsupportedAlgorithm(a) => write!(f, "unsupported algorithm {a:?}"),
            Self::InvalidEncoded => {
                f.write_str("encoded part is not lowercase hex of the right length")
            }
        }
    }
}

/// A JSON syntax or data error, kept opaque so the JSON library can change.
#[derive(Debug)]
pub struct JsonError(pub(crate) serde_json::Error);

impl JsonError {
    /// 1-based line of the error, 0 if unknown.
    #[must_use]
    pub fn line(&self) -> usize {
        self.0.line()
    }

    /// 1-based column of the error, 0 if unknown.
    #[must_use]
    pub fn column(&self) -> usize {
        self.0.column()
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for JsonError {}
