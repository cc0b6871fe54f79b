//! The referrers model: selecting a SOCI v1 index among a manifest's referrers (spec §4.7) and
//! maintaining the referrers tag-schema fallback index (spec §4.9).
//!
//! The HTTP side (Referrers API, `Link` pagination, `OCI-Filters-Applied`, tag GET/PUT) lives in
//! the registry crate; everything here is pure data.

use crate::consts::media_type;
use crate::descriptor::Descriptor;
use crate::error::Result;
use crate::manifest::{ImageIndex, Manifest};

/// The referrers of `artifact_type`, in the order given. Filtering is done client-side whether or
/// not the registry said it applied the filter; filtering twice is harmless.
pub fn filter_referrers<'a>(
    referrers: &'a [Descriptor],
    artifact_type: &'a str,
) -> impl Iterator<Item = &'a Descriptor> + 'a {
    referrers
        .iter()
        .filter(move |d| d.artifact_type == artifact_type)
}

/// The selection policy of spec §4.7: the **first** referrer of `artifact_type` in the order the
/// registry (or the fallback tag index) returned them; `None` means "no index, continue".
///
/// ```
/// use soci_index::{media_type, select_referrer, Descriptor, Digest};
///
/// let other = Descriptor::for_content(media_type::OCI_MANIFEST, b"sig").with_artifact_type("application/example");
/// let soci = Descriptor::for_content(media_type::OCI_MANIFEST, b"idx").with_artifact_type(media_type::SOCI_INDEX_V1);
/// let list = [other, soci.clone()];
/// assert_eq!(select_referrer(&list, media_type::SOCI_INDEX_V1), Some(&soci));
/// ```
#[must_use]
pub fn select_referrer<'a>(
    referrers: &'a [Descriptor],
    artifact_type: &str,
) -> Option<&'a Descriptor> {
    referrers.iter().find(|d| d.artifact_type == artifact_type)
}

/// The descriptor under which a pushed manifest (with a `subject`) is listed in its subject's
/// referrers: `mediaType` of the manifest (OCI manifest if absent), digest and size of `bytes`,
/// `artifactType` = the manifest's `artifactType` or else its `config.mediaType`, and the
/// manifest's annotations (spec §4.9).
///
/// # Errors
///
/// [`Error::Decode`](crate::Error::Decode) if `bytes` is not a manifest.
pub fn referrer_descriptor(bytes: &[u8]) -> Result<Descriptor> {
    let manifest = Manifest::from_json(bytes)?;
    let media = if manifest.media_type.is_empty() {
        media_type::OCI_MANIFEST
    } else {
        manifest.media_type.as_str()
    };
    let mut desc = Descriptor::for_content(media, bytes);
    desc.artifact_type = if manifest.artifact_type.is_empty() {
        manifest.config.media_type.clone()
    } else {
        manifest.artifact_type.clone()
    };
    desc.annotations = manifest.annotations;
    Ok(desc)
}

/// The result of [`update_fallback_index`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FallbackIndexUpdate {
    /// The updated referrers index.
    pub index: ImageIndex,
    /// Its Go JSON bytes, to PUT under the referrers tag.
    pub bytes: Vec<u8>,
    /// Descriptor of `bytes` (OCI index media type).
    pub descriptor: Descriptor,
    /// False if the referrer was already listed: nothing needs to be pushed.
    pub changed: bool,
    /// The previous index manifest, which the client should delete once the new one is tagged;
    /// `None` if there was none or nothing changed.
    pub superseded: Option<Descriptor>,
}

/// Adds `referrer` to the referrers tag-schema index (the image index tagged
/// [`Digest::referrers_tag`](crate::Digest::referrers_tag) of the subject).
///
/// `existing` is the current content of that tag, if any. Existing entries and every other field
/// of the index are kept (merge, never clobber); if an entry with the same digest is already
/// listed the index is left unchanged. Without an existing index a new OCI image index is started.
///
/// # Errors
///
/// [`Error::Decode`](crate::Error::Decode) if `existing` is not an image index.
pub fn update_fallback_index(
    existing: Option<&[u8]>,
    referrer: Descriptor,
) -> Result<FallbackIndexUpdate> {
    let (mut index, superseded) = match existing {
        Some(bytes) => (
            ImageIndex::from_json(bytes)?,
            Some(Descriptor::for_content(media_type::OCI_INDEX, bytes)),
        ),
        None => (ImageIndex::new(Vec::new()), None),
    };
    let changed = !index.manifests.iter().any(|d| d.digest == referrer.digest);
    if changed {
        index.manifests.push(referrer);
    }
    let bytes = index.to_json();
    let descriptor = Descriptor::for_content(media_type::OCI_INDEX, &bytes);
    Ok(FallbackIndexUpdate {
        index,
        bytes,
        descriptor,
        changed,
        superseded: superseded.filter(|_| changed),
    })
}
