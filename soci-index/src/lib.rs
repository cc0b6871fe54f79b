#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod build;
mod consts;
mod convert;
mod descriptor;
mod digest;
mod error;
mod index;
pub mod json;
mod manifest;
mod prefetch;
mod referrers;
pub mod store;
mod ztoc_adapter;

pub use build::{
    can_disable_xattrs, classify_layer, is_layer_media_type, is_opaque_whiteout, is_xattr_record,
    ztoc_descriptor, BuildEvent, BuiltIndex, Compression, IndexBuilder, IndexPlan, Indexed,
    LayerAction, LayerClass, LayerIndexer, LayerJob, LayerPrefetch, LayerZtoc, Optimization,
    PlannedLayer, SkipReason, ZtocInfo,
};
pub use consts::{
    annotation, label, media_type, DEFAULT_BUILD_TOOL_IDENTIFIER, DEFAULT_MIN_LAYER_SIZE,
    DEFAULT_SPAN_SIZE, EMPTY_CONFIG, EMPTY_CONFIG_DIGEST, EMPTY_CONFIG_SIZE,
    PREFETCH_ARTIFACT_VERSION,
};
pub use convert::{
    convert_image_index, convert_manifest, soci_index_descriptor, upsert_soci_index_descriptor,
    ConvertedManifest, Placement,
};
pub use descriptor::{Descriptor, Platform};
pub use digest::{Algorithm, Digest};
pub use error::{DigestError, Error, JsonError, Result};
pub use index::{disables_xattrs, parse_go_bool, Index, IndexVersion};
pub use manifest::{ImageIndex, Manifest};
pub use prefetch::{
    file_span_range, merge_span_ranges, normalize_prefetch_path, PrefetchArtifact, PrefetchSpan,
};
pub use referrers::{
    filter_referrers, referrer_descriptor, select_referrer, update_fallback_index,
    FallbackIndexUpdate,
};
pub use ztoc_adapter::{ParsedZtoc, ZtocIndexer};

/// Re-exported because [`ParsedZtoc`] and [`Error::Ztoc`] expose its types.
pub use soci_ztoc;
