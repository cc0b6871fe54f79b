//! OCI image manifests and image indexes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::consts::{label, media_type};
use crate::descriptor::{null_default, Descriptor};
use crate::error::Result;

/// An OCI (or Docker schema 2) image manifest.
///
/// Serializes like Go's `ocispec.Manifest`: `schemaVersion`, `mediaType`?, `artifactType`?,
/// `config`, `layers`, `subject`?, `annotations`? (`?` = omitted when empty). Unknown fields are
/// dropped on decode, as in Go.
///
/// `layers` is always written as an array; Go would write `null` for a manifest decoded without
/// `layers`, which no real manifest is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Manifest {
    /// Always 2.
    #[serde(default, deserialize_with = "null_default")]
    pub schema_version: u32,
    /// Media type of the manifest itself.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    /// Artifact type (OCI 1.1 artifacts).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub artifact_type: String,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, base first.
    #[serde(default, deserialize_with = "null_default")]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Arbitrary metadata.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// A schema-2 manifest with the given media type, config and layers.
    #[must_use]
    pub fn new(media_type: impl Into<String>, config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Self {
            schema_version: 2,
            media_type: media_type.into(),
            artifact_type: String::new(),
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// Decodes a manifest (OCI or Docker schema 2).
    ///
    /// # Errors
    ///
    /// [`Error::Decode`](crate::Error::Decode) if the bytes are not a manifest.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        crate::json::from_slice_named(bytes, "image manifest")
    }

    /// Go `encoding/json` bytes of this manifest.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        crate::json::to_vec(self)
            .expect("invariant: manifests always serialize (string keys, no floats)")
    }

    /// containerd GC labels for this manifest's content: `…config` and `…l.<i>` per layer
    /// (spec §4.6 step 4).
    #[must_use]
    pub fn gc_labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        labels.insert(
            label::GC_REF_CONFIG.to_owned(),
            self.config.digest.to_string(),
        );
        for (i, layer) in self.layers.iter().enumerate() {
            labels.insert(
                format!("{}{i}", label::GC_REF_LAYER_PREFIX),
                layer.digest.to_string(),
            );
        }
        labels
    }
}

impl TryFrom<&[u8]> for Manifest {
    type Error = crate::Error;

    fn try_from(bytes: &[u8]) -> Result<Self> {
        Self::from_json(bytes)
    }
}

/// An OCI image index (or Docker manifest list); also the shape of a referrers list.
///
/// Serializes like Go's `ocispec.Index`: `schemaVersion`, `mediaType`?, `artifactType`?,
/// `manifests`, `subject`?, `annotations`?.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ImageIndex {
    /// Always 2.
    #[serde(default, deserialize_with = "null_default")]
    pub schema_version: u32,
    /// Media type of the index itself.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    /// Artifact type.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub artifact_type: String,
    /// The manifests.
    #[serde(default, deserialize_with = "null_default")]
    pub manifests: Vec<Descriptor>,
    /// The manifest this index refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Arbitrary metadata.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl ImageIndex {
    /// An OCI image index (`schemaVersion` 2, OCI index media type) listing `manifests`.
    #[must_use]
    pub fn new(manifests: Vec<Descriptor>) -> Self {
        Self {
            schema_version: 2,
            media_type: media_type::OCI_INDEX.to_owned(),
            artifact_type: String::new(),
            manifests,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// Decodes an image index or manifest list.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`](crate::Error::Decode) if the bytes are not an image index.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        crate::json::from_slice_named(bytes, "image index")
    }

    /// Go `encoding/json` bytes of this index.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        crate::json::to_vec(self)
            .expect("invariant: image indexes always serialize (string keys, no floats)")
    }

    /// containerd GC labels for this index's content: `…m.<i>` per manifest (spec §4.6 step 6).
    #[must_use]
    pub fn gc_labels(&self) -> BTreeMap<String, String> {
        self.manifests
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    format!("{}{i}", label::GC_REF_MANIFEST_PREFIX),
                    m.digest.to_string(),
                )
            })
            .collect()
    }
}

impl TryFrom<&[u8]> for ImageIndex {
    type Error = crate::Error;

    fn try_from(bytes: &[u8]) -> Result<Self> {
        Self::from_json(bytes)
    }
}
