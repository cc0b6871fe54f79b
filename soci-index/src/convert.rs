//! The pure data steps of `soci convert` (SOCI index manifest v2, spec §4.6).
//!
//! The orchestration (reading from and pushing to a content store, GC labels, the artifacts DB) is
//! the caller's; these helpers do the JSON rewriting so that every Rust tool produces the same
//! bytes as the Go CLI, which makes re-conversion idempotent.

use crate::consts::{annotation, media_type};
use crate::descriptor::{Descriptor, Platform};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{ImageIndex, Manifest};

/// A platform manifest rewritten for a converted image (see [`convert_manifest`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConvertedManifest {
    /// The rewritten manifest.
    pub manifest: Manifest,
    /// Its Go JSON bytes, to push.
    pub bytes: Vec<u8>,
    /// `{mediaType: OCI manifest, digest, size}` of `bytes`.
    pub descriptor: Descriptor,
}

impl ConvertedManifest {
    /// Updates the manifest's entry in the image index in place (spec §4.6 step 4): new digest and
    /// size, OCI manifest media type, and `annotations` replaced wholesale by the manifest's own
    /// annotations (Go quirk: annotations that were only on the descriptor are lost). Platform and
    /// all other fields are kept.
    pub fn update_descriptor(&self, descriptor: &mut Descriptor) {
        descriptor.media_type = media_type::OCI_MANIFEST.to_owned();
        descriptor.digest = self.descriptor.digest.clone();
        descriptor.size = self.descriptor.size;
        descriptor
            .annotations
            .clone_from(&self.manifest.annotations);
    }
}

/// Rewrites a platform manifest (OCI or Docker) for a converted image: `mediaType` becomes the OCI
/// manifest type, `config.mediaType` the OCI config type (config bytes and layer media types are
/// unchanged), and if `soci_index` is given the manifest gets the `com.amazon.soci.index-digest`
/// annotation. The result is re-serialized with Go JSON, dropping unknown fields.
///
/// Applying it to its own output with the same index digest is the identity, which is what makes
/// converting a converted image yield the same digest.
///
/// # Errors
///
/// [`Error::Decode`] if `bytes` is not a manifest.
pub fn convert_manifest(bytes: &[u8], soci_index: Option<&Digest>) -> Result<ConvertedManifest> {
    let mut manifest = Manifest::from_json(bytes)?;
    media_type::OCI_MANIFEST.clone_into(&mut manifest.media_type);
    media_type::OCI_CONFIG.clone_into(&mut manifest.config.media_type);
    if let Some(index) = soci_index {
        manifest
            .annotations
            .insert(annotation::INDEX_DIGEST.to_owned(), index.to_string());
    }
    let bytes = manifest.to_json();
    let descriptor = Descriptor::for_content(media_type::OCI_MANIFEST, &bytes);
    Ok(ConvertedManifest {
        manifest,
        bytes,
        descriptor,
    })
}

/// The descriptor of a v2 SOCI index inside a converted image index (spec §4.6 step 5):
/// `{mediaType: OCI manifest, digest, size, annotations: {image-manifest-digest}, platform,
/// artifactType: v2}`.
///
/// `index` is the descriptor of the SOCI index manifest bytes (e.g. [`Index::descriptor`]);
/// only its digest and size are used.
///
/// [`Index::descriptor`]: crate::Index::descriptor
#[must_use]
pub fn soci_index_descriptor(
    index: &Descriptor,
    platform: Platform,
    image_manifest: &Digest,
) -> Descriptor {
    Descriptor::new(media_type::OCI_MANIFEST, index.digest.clone(), index.size)
        .with_annotation(annotation::IMAGE_MANIFEST_DIGEST, image_manifest.as_str())
        .with_platform(platform)
        .with_artifact_type(media_type::SOCI_INDEX_V2)
}

/// Where [`upsert_soci_index_descriptor`] put the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// An existing v2 SOCI index descriptor for the same platform at this position was replaced.
    Replaced(usize),
    /// The descriptor was appended at this position.
    Appended(usize),
}

/// Inserts a SOCI index descriptor into an image index: if a descriptor with the v2 artifact type
/// and a platform that strictly matches (after normalization) already exists, the first such one
/// is replaced; otherwise `descriptor` is appended (spec §4.6 step 5).
pub fn upsert_soci_index_descriptor(index: &mut ImageIndex, descriptor: Descriptor) -> Placement {
    let existing = descriptor.platform.as_ref().and_then(|platform| {
        index.manifests.iter().position(|d| {
            d.artifact_type == media_type::SOCI_INDEX_V2
                && d.platform
                    .as_ref()
                    .is_some_and(|p| p.matches_strict(platform))
        })
    });
    match existing {
        Some(i) => {
            index.manifests[i] = descriptor;
            Placement::Replaced(i)
        }
        None => {
            index.manifests.push(descriptor);
            Placement::Appended(index.manifests.len() - 1)
        }
    }
}

/// The starting image index of a conversion when the image target is itself an index or Docker
/// manifest list (spec §4.6 step 2): decoded, media type checked, and `mediaType` forced to the
/// OCI index type. For a single-manifest target use [`ImageIndex::new`] with the target
/// descriptor (carrying its platform) instead.
///
/// # Errors
///
/// [`Error::Decode`] for malformed JSON, [`Error::UnexpectedImageIndexMediaType`] if the
/// document's `mediaType` is present and neither an OCI index nor a Docker manifest list.
pub fn convert_image_index(bytes: &[u8]) -> Result<ImageIndex> {
    let mut index = ImageIndex::from_json(bytes)?;
    match index.media_type.as_str() {
        "" | media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST => {}
        other => {
            return Err(Error::UnexpectedImageIndexMediaType {
                media_type: other.to_owned(),
            })
        }
    }
    media_type::OCI_INDEX.clone_into(&mut index.media_type);
    Ok(index)
}
