//! The SOCI index manifest (spec §4.2).

use std::collections::BTreeMap;
use std::fmt;

use crate::consts::{annotation, label, media_type, EMPTY_CONFIG_DIGEST, EMPTY_CONFIG_SIZE};
use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// SOCI index manifest version, determined only by `config.mediaType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexVersion {
    /// v1: discovered through the referrers API; has a `subject`.
    V1,
    /// v2: referenced by the image manifest's `com.amazon.soci.index-digest` annotation; no
    /// `subject`.
    V2,
}

impl IndexVersion {
    /// The artifact type (`config.mediaType`) of this version.
    #[must_use]
    pub fn artifact_type(self) -> &'static str {
        match self {
            Self::V1 => media_type::SOCI_INDEX_V1,
            Self::V2 => media_type::SOCI_INDEX_V2,
        }
    }

    /// The version whose artifact type is `media_type`, if any.
    #[must_use]
    pub fn from_artifact_type(media_type: &str) -> Option<Self> {
        match media_type {
            media_type::SOCI_INDEX_V1 => Some(Self::V1),
            media_type::SOCI_INDEX_V2 => Some(Self::V2),
            _ => None,
        }
    }
}

impl fmt::Display for IndexVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        })
    }
}

/// A SOCI index: the list of zTOC and prefetch blobs for one platform manifest of an image.
///
/// On the wire it is an OCI image manifest (see [`Index::to_json`]). Decoding takes the version
/// from `config.mediaType` only and ignores the top-level `mediaType`, `schemaVersion` and
/// `artifactType`; encoding always rebuilds the manifest from (config, blobs, subject,
/// annotations) and never writes a top-level `artifactType`, exactly like the Go tools.
///
/// ```
/// use soci_index::{Descriptor, Digest, Index, IndexVersion};
///
/// let ztoc = Descriptor::for_content("application/octet-stream", b"ztoc bytes");
/// let index = Index::new_v2(vec![ztoc], "AWS SOCI CLI v0.2");
/// let json = index.to_json();
/// let back = Index::from_json(&json).unwrap();
/// assert_eq!(back.version(), IndexVersion::V2);
/// assert_eq!(back.to_json(), json);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    version: IndexVersion,
    config: Descriptor,
    blobs: Vec<Descriptor>,
    subject: Option<Descriptor>,
    annotations: BTreeMap<String, String>,
}

impl Index {
    /// The `config` descriptor every SOCI index of `version` carries: the empty `{}` blob with the
    /// version's artifact type.
    #[must_use]
    pub fn config_descriptor(version: IndexVersion) -> Descriptor {
        Descriptor::new(
            version.artifact_type(),
            Digest::parse(EMPTY_CONFIG_DIGEST)
                .expect("invariant: EMPTY_CONFIG_DIGEST is a valid digest"),
            EMPTY_CONFIG_SIZE,
        )
    }

    /// A v1 index for the platform manifest described by `subject` (only its `mediaType`,
    /// `digest` and `size` are kept).
    #[must_use]
    pub fn new_v1(
        blobs: Vec<Descriptor>,
        subject: &Descriptor,
        build_tool_identifier: &str,
    ) -> Self {
        Self::assemble(
            IndexVersion::V1,
            blobs,
            Some(subject.to_plain()),
            build_tool_identifier,
        )
    }

    /// A v2 index (no subject).
    #[must_use]
    pub fn new_v2(blobs: Vec<Descriptor>, build_tool_identifier: &str) -> Self {
        Self::assemble(IndexVersion::V2, blobs, None, build_tool_identifier)
    }

    fn assemble(
        version: IndexVersion,
        blobs: Vec<Descriptor>,
        subject: Option<Descriptor>,
        build_tool_identifier: &str,
    ) -> Self {
        let mut annotations = BTreeMap::new();
        annotations.insert(
            annotation::BUILD_TOOL_IDENTIFIER.to_owned(),
            build_tool_identifier.to_owned(),
        );
        Self {
            version,
            config: Self::config_descriptor(version),
            blobs,
            subject,
            annotations,
        }
    }

    /// Decodes an index manifest.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] for malformed JSON, [`Error::UnknownIndexVersion`] if `config.mediaType`
    /// is neither SOCI artifact type.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let manifest: Manifest = crate::json::from_slice_named(bytes, "SOCI index")?;
        Self::from_manifest(manifest)
    }

    /// Interprets an already decoded manifest as a SOCI index.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownIndexVersion`] if `config.mediaType` is neither SOCI artifact type.
    pub fn from_manifest(manifest: Manifest) -> Result<Self> {
        let version =
            IndexVersion::from_artifact_type(&manifest.config.media_type).ok_or_else(|| {
                Error::UnknownIndexVersion {
                    media_type: manifest.config.media_type.clone(),
                }
            })?;
        Ok(Self {
            version,
            config: manifest.config,
            blobs: manifest.layers,
            subject: manifest.subject,
            annotations: manifest.annotations,
        })
    }

    /// The manifest this index is written as: `schemaVersion` 2, OCI manifest media type, no
    /// `artifactType`.
    #[must_use]
    pub fn to_manifest(&self) -> Manifest {
        let mut m = Manifest::new(
            media_type::OCI_MANIFEST,
            self.config.clone(),
            self.blobs.clone(),
        );
        m.subject.clone_from(&self.subject);
        m.annotations.clone_from(&self.annotations);
        m
    }

    /// Go `encoding/json` bytes of the index manifest; these bytes are what gets digested and
    /// pushed.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        self.to_manifest().to_json()
    }

    /// Descriptor of [`Index::to_json`]'s bytes (`mediaType` OCI manifest, digest, size).
    #[must_use]
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::for_content(media_type::OCI_MANIFEST, &self.to_json())
    }

    /// The version.
    #[must_use]
    pub fn version(&self) -> IndexVersion {
        self.version
    }

    /// The `config` descriptor as decoded (or [`Index::config_descriptor`] for new indexes).
    #[must_use]
    pub fn config(&self) -> &Descriptor {
        &self.config
    }

    /// All blobs (`layers` on the wire): zTOCs, then prefetch artifacts.
    #[must_use]
    pub fn blobs(&self) -> &[Descriptor] {
        &self.blobs
    }

    /// The platform manifest a v1 index belongs to.
    #[must_use]
    pub fn subject(&self) -> Option<&Descriptor> {
        self.subject.as_ref()
    }

    /// Manifest annotations.
    #[must_use]
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        &self.annotations
    }

    /// The `com.amazon.soci.build-tool-identifier` annotation.
    #[must_use]
    pub fn build_tool_identifier(&self) -> Option<&str> {
        self.annotations
            .get(annotation::BUILD_TOOL_IDENTIFIER)
            .map(String::as_str)
    }

    /// zTOC descriptors (media type `application/octet-stream`).
    pub fn ztocs(&self) -> impl Iterator<Item = &Descriptor> {
        self.blobs
            .iter()
            .filter(|d| d.media_type == media_type::ZTOC)
    }

    /// Prefetch artifact descriptors.
    pub fn prefetch_artifacts(&self) -> impl Iterator<Item = &Descriptor> {
        self.blobs
            .iter()
            .filter(|d| d.media_type == media_type::PREFETCH)
    }

    /// Map from image layer digest (the `com.amazon.soci.image-layer-digest` annotation) to zTOC
    /// descriptor, as the snapshotter builds it (spec §4.8 step 5). Descriptors without a parsable
    /// annotation are left out; for duplicates the last one wins.
    #[must_use]
    pub fn ztocs_by_layer(&self) -> BTreeMap<Digest, &Descriptor> {
        by_layer(self.ztocs())
    }

    /// Map from image layer digest to prefetch artifact descriptor.
    #[must_use]
    pub fn prefetch_by_layer(&self) -> BTreeMap<Digest, &Descriptor> {
        by_layer(self.prefetch_artifacts())
    }

    /// containerd GC labels for the index content: `…config` and `…ztoc.<i>` for every entry of
    /// `layers` (spec §4.5 step 6).
    #[must_use]
    pub fn gc_labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        labels.insert(
            label::GC_REF_CONFIG.to_owned(),
            self.config.digest.to_string(),
        );
        for (i, blob) in self.blobs.iter().enumerate() {
            labels.insert(
                format!("{}{i}", label::GC_REF_ZTOC_PREFIX),
                blob.digest.to_string(),
            );
        }
        labels
    }
}

impl TryFrom<&[u8]> for Index {
    type Error = Error;

    fn try_from(bytes: &[u8]) -> Result<Self> {
        Self::from_json(bytes)
    }
}

fn by_layer<'a>(descs: impl Iterator<Item = &'a Descriptor>) -> BTreeMap<Digest, &'a Descriptor> {
    descs
        .filter_map(|d| {
            let layer = Digest::parse(d.annotation(annotation::IMAGE_LAYER_DIGEST)?).ok()?;
            Some((layer, d))
        })
        .collect()
}

/// Go's `strconv.ParseBool`: `1 t T TRUE true True` are true, `0 f F FALSE false False` false,
/// anything else an error (`None`).
#[must_use]
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Whether a zTOC descriptor asks for the layer to be mounted without xattr support: its
/// `com.amazon.soci.disable-xattrs` annotation parses as true (unparsable ⇒ false, spec §4.1).
#[must_use]
pub fn disables_xattrs(ztoc: &Descriptor) -> bool {
    ztoc.annotation(annotation::DISABLE_XATTRS)
        .and_then(parse_go_bool)
        .unwrap_or(false)
}
